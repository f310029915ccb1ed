"""Generator fidelity (stage `fidelity`, and part of the audit): the real-trained judge's
recall on the real test images, their reconstructions and the synthetic set, on constructed
judges whose answers are known, and in runs that share the judge with rebalance=none."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import config

from drvae.metrics.fidelity import DEGRADATIONS, degrade, judge_limits
from drvae.pipeline.fidelity_stage import measure, measure_judge
from drvae.pipeline.run import run

GRADES = np.array([0, 0, 0, 0, 1, 2, 2, 3, 4])  # the "test split"
REQUESTED = np.repeat(np.arange(5), 3)  # the "synthetic set"
KEYS = {"n_real", "n_recon", "n_synthetic", "real", "recon", "synthetic"}
RATIOS = {"recon_ratio", "synthetic_ratio"}


def images_showing(grades: np.ndarray) -> np.ndarray:
    """uint8 (N, 4, 4, 3) images whose pixels hold a grade: what `reads_the_pixel` sees."""
    return np.broadcast_to(grades[:, None, None, None], (len(grades), 4, 4, 3)).astype(np.uint8)


def one_hot(grades: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.one_hot(grades.long(), 5).float()  # (N, 5)


def always_two(images: np.ndarray) -> torch.Tensor:
    return one_hot(torch.full((len(images),), 2))


def reads_the_pixel(images: np.ndarray) -> torch.Tensor:
    return one_hot(torch.from_numpy(images[:, 0, 0, 0].astype(np.int64)))


def labelled(grades: np.ndarray, shown: np.ndarray | None = None) -> tuple:
    return images_showing(grades if shown is None else shown), grades


def test_a_judge_that_always_says_grade_2_recalls_grade_2_only() -> None:
    found = measure(always_two, labelled(GRADES), labelled(GRADES), labelled(REQUESTED))
    rows = found["grades"]
    assert set(rows) == {"0", "1", "2", "3", "4"} and set(rows["0"]) == KEYS | RATIOS
    assert [rows[g]["n_real"] for g in "01234"] == [4, 1, 2, 1, 1]
    assert [rows[g]["n_synthetic"] for g in "01234"] == [3] * 5
    for name in ("real", "recon", "synthetic"):
        assert [rows[g][name] for g in "01234"] == [0.0, 0.0, 1.0, 0.0, 0.0]
    # a ratio is undefined where the judge recalls no real image of the grade
    assert [rows[g]["recon_ratio"] for g in "01234"] == [None, None, 1.0, None, None]
    assert found["pooled"]["real"] == {"n": 9, "accuracy": round(2 / 9, 4), "qwk": 0.0}
    assert found["pooled"]["synthetic"] == {"n": 15, "accuracy": 0.2, "qwk": 0.0}


def test_each_set_is_judged_on_its_own_images_against_its_own_grades() -> None:
    """A judge that reads the grade off the image: perfect on the real images, fooled by
    blank reconstructions (all read as grade 0) and by samples showing the next grade."""
    blank = np.zeros_like(GRADES)
    found = measure(
        reads_the_pixel,
        labelled(GRADES),
        labelled(GRADES, shown=blank),
        labelled(REQUESTED, shown=(REQUESTED + 1) % 5),
    )
    rows = found["grades"]
    assert [rows[g]["real"] for g in "01234"] == [1.0] * 5
    assert [rows[g]["recon"] for g in "01234"] == [1.0, 0.0, 0.0, 0.0, 0.0]
    assert [rows[g]["recon_ratio"] for g in "01234"] == [1.0, 0.0, 0.0, 0.0, 0.0]
    assert [rows[g]["synthetic_ratio"] for g in "01234"] == [0.0] * 5
    assert found["pooled"]["real"]["qwk"] == 1.0
    assert found["pooled"]["recon"]["accuracy"] == round(4 / 9, 4)


def dot(size: int = 16) -> torch.Tensor:
    """uint8 (1, size, size, 3): grey 128 with one dark pixel, a 1-px lesion."""
    image = torch.full((1, size, size, 3), 128, dtype=torch.uint8)
    image[0, size // 2, size // 2] = 0
    return image


def test_blur_and_half_resolution_erase_a_one_pixel_lesion_and_keep_the_flat_field() -> None:
    for kind in ("blur_1px", "half_resolution"):
        out = degrade(dot(), kind)
        assert out.shape == (1, 16, 16, 3) and out.dtype == torch.uint8
        assert int(out[0, 8, 8, 0]) > 64  # the lesion lost most of its contrast
        assert int(out[0, 0, 0, 0]) == 128  # far from it, nothing changed


def test_the_noise_is_the_same_every_run_and_about_eight_grey_levels() -> None:
    flat = torch.full((4, 32, 32, 3), 128, dtype=torch.uint8)
    noisy = degrade(flat, "noise_8")
    assert torch.equal(noisy, degrade(flat, "noise_8"))
    assert 7.0 < (noisy.float() - 128).std() < 9.0
    with pytest.raises(ValueError, match="degradation must be one of"):
        degrade(flat, "jpeg")


def test_a_judge_that_reads_the_exact_pixel_is_fooled_by_noise_only() -> None:
    """Flat images hold their grade in every pixel: blur and resizing keep it, noise does not."""
    real = labelled(GRADES)
    limits = measure_judge(lambda x: reads_the_pixel(x % 5), real)  # noise leaves 0-4
    assert set(limits) == set(DEGRADATIONS)
    for kind in ("blur_1px", "half_resolution"):
        assert limits[kind]["recall"] == {g: 1.0 for g in "01234"} and limits[kind]["accuracy"] == 1
    assert limits["noise_8"]["accuracy"] < 0.5
    none = judge_limits(torch.as_tensor(GRADES), {"blur_1px": always_two(real[0])})
    assert none["blur_1px"]["recall"]["2"] == 1.0 and none["blur_1px"]["recall"]["0"] == 0.0


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict]:
    """`make run` in small: a rebalance=none job, then the default (synthetic) job."""
    cache = tmp_path_factory.mktemp("fidelity-cache")
    none = run(config(cache, tmp_path_factory.mktemp("none"), "rebalance=none"))
    synthetic = run(config(cache, tmp_path_factory.mktemp("synthetic")))
    return none, synthetic


def test_the_default_run_writes_the_fidelity_and_its_grid(shared) -> None:
    _, results = shared
    fidelity, stage = results["audit"]["fidelity"], results["stages"]["fidelity"]
    assert set(fidelity) == {"grades", "pooled", "judge", "grid", "judge_limits"}
    assert set(fidelity["judge_limits"]) == set(DEGRADATIONS)
    assert set(fidelity["pooled"]) == {"real", "recon", "synthetic"}
    assert all(set(row) == KEYS | RATIOS for row in fidelity["grades"].values())
    assert Path(fidelity["grid"]).is_file() and Path(stage["path"]) == Path(fidelity["grid"]).parent
    assert (Path(results["config"]["paths"]["output_dir"]) / "fidelity_grid.png").is_file()
    assert stage["reused"] is False and "audit" not in results["stages"]  # no TSTR, no audit
    n_test = sum(results["data"]["counts"]["test"].values())
    assert fidelity["pooled"]["real"]["n"] == fidelity["pooled"]["recon"]["n"] == n_test
    assert fidelity["pooled"]["synthetic"]["n"] == 5 * 4  # rebalance.per_grade=4


def test_the_judge_is_the_rebalance_none_jobs_classifier_trained_once(shared) -> None:
    none, synthetic = shared
    judge = synthetic["stages"]["audit_reference"]
    assert (
        judge["key"]
        == none["stages"]["classifier"]["key"]
        == synthetic["audit"]["fidelity"]["judge"]
    )
    assert judge["reused"] is True  # the none job trained it; no extra classifier
    # its recall on the real test images is the one its own test reported
    rows = synthetic["audit"]["fidelity"]["grades"]
    for g, row in rows.items():
        assert row["real"] == pytest.approx(none["metrics"][f"test/recall_grade{g}"], abs=1e-3)


def test_a_run_without_synthetic_images_records_fidelity_as_skipped(shared) -> None:
    none, _ = shared
    assert none["stages"]["fidelity"] == {
        "skipped": "the rebalancing adds no synthetic image to judge"
    }
    assert "audit" not in none and "audit_reference" not in none["stages"]


def test_the_report_shows_each_judged_jobs_fidelity(shared, tmp_path: Path) -> None:
    from drvae.report.table import write_report

    for i, results in enumerate(shared):  # their results.json in one folder: a sweep
        (tmp_path / str(i)).mkdir()
        kept = {**results, "overrides": [["rebalance=none"], ["rebalance=synthetic"]][i]}
        (tmp_path / str(i) / "results.json").write_text(json.dumps(kept))
    text, _ = write_report(tmp_path, replicates=10)
    fidelity = shared[1]["audit"]["fidelity"]
    assert "## Generator fidelity" in text and "### rebalance=synthetic" in text
    assert "### rebalance=none" not in text  # nothing judged there
    real = fidelity["pooled"]["real"]["accuracy"]
    assert (
        f"| pooled accuracy | {sum(shared[1]['data']['counts']['test'].values())} / 20 | {real:.3f}"
        in text
    )
    blurred = fidelity["judge_limits"]["blur_1px"]["accuracy"]
    assert "| blur_1px | " in text and f"{blurred:.3f} |" in text
    with (tmp_path / "report.csv").open() as f:
        rows = {(r["setting"], r["metric"]): r for r in csv.DictReader(f)}
    row = rows[("rebalance=synthetic", "fidelity/recon/accuracy")]
    assert float(row["mean"]) == pytest.approx(fidelity["pooled"]["recon"]["accuracy"])
    assert ("rebalance=none", "fidelity/recon/accuracy") not in rows


def test_wandb_gets_the_fidelity_figures(shared) -> None:
    from drvae.tracking import summary

    _, results = shared
    values = summary(results)
    pooled = results["audit"]["fidelity"]["pooled"]
    assert values["fidelity/synthetic/accuracy"] == pooled["synthetic"]["accuracy"]
    assert (
        values["fidelity/real/recall_grade0"] == results["audit"]["fidelity"]["grades"]["0"]["real"]
    )


def test_the_fidelity_stage_does_not_make_a_run_a_fidelity_job(tmp_path: Path) -> None:
    from drvae.tracking import job_type

    assert job_type(config(tmp_path, tmp_path)) == "classifier"  # the default stages
    assert job_type(config(tmp_path, tmp_path, "stages=[vae,fidelity]")) == "fidelity"
    assert job_type(config(tmp_path, tmp_path, "stages=[vae,fidelity,audit]")) == "audit"
