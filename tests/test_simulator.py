"""The simulated default dataset: counts, determinism, layout, safety and what the grades draw."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from drvae.data.records import NUM_GRADES, DataError
from drvae.data.simulator import (
    DEFAULT_GRADE_FRACTIONS,
    grade_counts,
    render_fundus,
    simulate_dataset,
)


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _render(grade: int, size: int, key: int) -> np.ndarray:
    return render_fundus(grade, size, np.random.default_rng([123, key])).astype(np.float64)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[int, int]]:
    out = tmp_path_factory.mktemp("sim") / "ds"
    return out, simulate_dataset(out, 10, size=32, seed=5, workers=1)


# ---------------------------------------------------------------- grade counts


def test_default_fractions_match_the_paper() -> None:
    f = DEFAULT_GRADE_FRACTIONS
    assert len(f) == NUM_GRADES and sum(f) == pytest.approx(1.0, abs=1e-12)
    assert (f[0], f[4]) == (0.7367, 0.0216)
    assert f[1] / f[2] == pytest.approx(2443 / 5292) and f[3] / f[2] == pytest.approx(873 / 5292)


@pytest.mark.parametrize(
    ("n", "fractions", "expected"),
    [
        (1000, DEFAULT_GRADE_FRACTIONS, [737, 69, 148, 24, 22]),  # remainders .7 .597 .593 .512 .6
        (7, (0.2,) * 5, [2, 2, 1, 1, 1]),  # equal remainders go to the lower grades
        (1, DEFAULT_GRADE_FRACTIONS, [1, 0, 0, 0, 0]),
        (10, (0, 0, 0, 0, 1), [0, 0, 0, 0, 10]),
    ],
)
def test_grade_counts_largest_remainder(n: int, fractions, expected: list[int]) -> None:
    assert grade_counts(n, fractions) == expected


@pytest.mark.parametrize("n", [1, 2, 5, 99, 600, 12345])
def test_grade_counts_sum_to_n_and_stay_within_one_of_exact(n: int) -> None:
    counts = grade_counts(n)
    assert sum(counts) == n
    assert all(abs(c - f * n) < 1 for c, f in zip(counts, DEFAULT_GRADE_FRACTIONS, strict=True))


@pytest.mark.parametrize(
    ("fractions", "says"),
    [
        ((0.5, 0.5), "5"),
        ((0.2,) * 6, "5"),
        ((0.6, 0.6, -0.2, 0.0, 0.0), "non-negative"),
        ((0.2, 0.2, 0.2, 0.2, 0.1), "sum to 1"),
        ((0.2, 0.2, 0.2, 0.2, float("nan")), "finite"),
        (("a", 0.2, 0.2, 0.2, 0.2), "5"),
    ],
)
def test_bad_fractions_raise(fractions, says: str) -> None:
    with pytest.raises(DataError, match=says):
        grade_counts(10, fractions)


def test_fractions_within_tolerance_are_accepted() -> None:
    assert sum(grade_counts(100, (0.2, 0.2, 0.2, 0.2, 0.2 + 5e-7))) == 100


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"n": 0}, "n must"),
        ({"n": 2.5}, "n must"),
        ({"size": 15}, "size must"),
        ({"workers": 0}, "workers must"),
        ({"seed": -1}, "seed must"),
        ({"fractions": (1.0, 0.0, 0.0, 0.0)}, "5"),
    ],
)
def test_bad_arguments_raise_before_writing(tmp_path: Path, kwargs: dict, says: str) -> None:
    args = {"n": 3, "size": 16, **kwargs}
    with pytest.raises(DataError, match=says):
        simulate_dataset(tmp_path / "ds", **args)
    assert list(tmp_path.iterdir()) == []


def test_render_rejects_bad_grade_and_size() -> None:
    with pytest.raises(DataError, match="grade"):
        render_fundus(5, 32, np.random.default_rng(0))
    with pytest.raises(DataError, match="size"):
        render_fundus(0, 8, np.random.default_rng(0))


# ---------------------------------------------------------------- dataset files


def test_same_seed_gives_identical_files_for_any_worker_count(
    tmp_path: Path, small_run: tuple[Path, dict[int, int]]
) -> None:
    out, _ = small_run
    simulate_dataset(tmp_path / "again", 10, size=32, seed=5, workers=2)
    assert _files(tmp_path / "again") == _files(out)


def test_different_seeds_differ(tmp_path: Path, small_run: tuple[Path, dict[int, int]]) -> None:
    out, _ = small_run
    simulate_dataset(tmp_path / "other", 10, size=32, seed=6, workers=1)
    theirs, ours = _files(tmp_path / "other"), _files(out)
    pngs = [k for k in ours if k.endswith(".png")]
    assert sum(theirs[k] != ours[k] for k in pngs) == len(pngs)


def test_aptos_layout(small_run: tuple[Path, dict[int, int]]) -> None:
    out, counts = small_run
    with open(out / "train.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["id_code", "diagnosis"]
    assert [r[0] for r in rows[1:]] == [f"sim_{i:06d}" for i in range(10)]
    grades = [int(r[1]) for r in rows[1:]]
    assert (
        counts
        == dict(enumerate(grade_counts(10)))
        == {g: grades.count(g) for g in range(NUM_GRADES)}
    )
    for image_id, _ in rows[1:]:
        img = cv2.imread(str(out / "train_images" / f"{image_id}.png"), cv2.IMREAD_UNCHANGED)
        assert img is not None and img.shape == (32, 32, 3) and img.dtype == np.uint8
    assert len(list((out / "train_images").iterdir())) == 10
    meta = json.loads((out / "simulation.json").read_text())
    assert (meta["n"], meta["size"], meta["seed"]) == (10, 32, 5)
    assert meta["grade_counts"] == {str(g): c for g, c in counts.items()}
    assert "drvae_version" in meta and len(meta["grade_fractions"]) == NUM_GRADES
    assert not list(out.parent.glob("ds.tmp-*"))  # the staging folder was renamed away


def test_grades_are_shuffled(tmp_path: Path) -> None:
    simulate_dataset(tmp_path / "ds", 40, size=16, seed=0, fractions=(0.5, 0, 0, 0, 0.5))
    with open(tmp_path / "ds" / "train.csv", newline="") as f:
        grades = [int(r["diagnosis"]) for r in csv.DictReader(f)]
    assert sorted(grades) == [0] * 20 + [4] * 20 and grades != sorted(grades)


def test_refuses_to_overwrite_a_non_empty_folder(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    out.mkdir()
    (out / "keep.txt").write_text("earlier data")
    with pytest.raises(DataError, match="refusing to overwrite"):
        simulate_dataset(out, 3, size=16)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


def test_fills_an_existing_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "ds").mkdir()
    simulate_dataset(tmp_path / "ds", 2, size=16)
    assert (tmp_path / "ds" / "train.csv").is_file()


def test_reader_accepts_the_output(small_run: tuple[Path, dict[int, int]]) -> None:
    from drvae.data.readers.kaggle import read_aptos
    from drvae.data.records import ProblemLog

    out, counts = small_run
    result = read_aptos(out, ProblemLog("raise"))
    assert result.per_grade() == counts and not result.problems


# ---------------------------------------------------------------- the pictures


@pytest.mark.parametrize("size", [16, 64, 97])
def test_black_outside_the_field_of_view_and_lit_inside(size: int) -> None:
    for key in range(4):
        img = render_fundus(4, size, np.random.default_rng([9, key]))
        assert img.shape == (size, size, 3) and img.dtype == np.uint8
        y, x = np.mgrid[:size, :size]
        r = np.hypot(x - (size - 1) / 2, y - (size - 1) / 2)  # (size, size)
        assert img[r > size / 2 + 1].max() == 0  # the corners
        assert img[r < 0.3 * size].mean() > 15


def test_same_rng_same_image_and_sizes_agree() -> None:
    a, b = _render(2, 64, 0), _render(2, 64, 0)
    assert np.array_equal(a, b)
    half = cv2.resize(_render(2, 128, 0).astype(np.float32), (64, 64), interpolation=cv2.INTER_AREA)
    same_eye = np.abs(half - a).mean()
    other_eye = np.abs(_render(2, 64, 1) - a).mean()
    assert same_eye < 0.3 * other_eye


def test_right_and_left_eyes_mirror_the_disc() -> None:
    """The brightest blob (the disc) sits right of centre in about half the eyes."""
    sides = []
    for key in range(24):
        img = cv2.GaussianBlur(_render(0, 64, key).sum(axis=2), (0, 0), 3)
        sides.append(np.unravel_index(img.argmax(), img.shape)[1] > 31.5)
    assert 5 <= sum(sides) <= 19


def test_higher_grades_draw_more_lesions() -> None:
    """The same rng draws the same eye at every grade; only the lesions differ, so the change
    from the grade-0 picture measures how much lesion each grade draws."""
    keys, size = range(12), 64
    change = np.zeros(NUM_GRADES)
    for key in keys:
        base = _render(0, size, key)
        for grade in range(NUM_GRADES):
            change[grade] += np.abs(_render(grade, size, key) - base).mean() / len(keys)
    assert change[0] == 0
    assert 0 < change[1] < change[2] < change[3]
    assert change[4] > change[2]


def test_grade_one_adds_only_small_dark_red_dots() -> None:
    """Microaneurysms darken a few pixels and brighten none (no exudates, no cotton wool)."""
    for key in range(6):
        base, mild = _render(0, 96, key), _render(1, 96, key)
        diff = mild - base  # (96, 96, 3)
        assert (diff.sum(axis=2) < -20).sum() > 0
        assert (diff > 12).sum() < 0.02 * (diff < -12).sum() + 3
