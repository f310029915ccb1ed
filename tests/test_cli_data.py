"""`drvae-data`: inspect (for a person, or a script with --json), prepare, split, simulate."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import numpy as np
import pytest
from conftest import APTOS

from drvae.data.cli import main
from drvae.data.readers import read_dataset
from drvae.data.records import NoUsableImages

if TYPE_CHECKING:
    from conftest import Layout


def inspect_json(layout: Layout, capsys, *extra: str) -> dict:
    argv = ["inspect", "--source", layout.source, "--root", str(layout.root), "--json"]
    options = [
        arg for key, value in layout.options.items() for arg in ("--option", f"{key}={value}")
    ]
    assert main([*argv, *options, *extra]) == 0
    out = capsys.readouterr().out
    return json.loads(out)


def test_inspect_json_counts_grades_patients_and_problems(aptos: Layout, capsys) -> None:
    summary = inspect_json(aptos, capsys)
    assert summary["source"] == "aptos"
    assert summary["n_images"] == 10
    assert summary["per_grade"] == {str(g): n for g, n in aptos.per_grade.items()}
    assert summary["n_patients"] == 10
    assert summary["problems"] == []
    assert summary["image_sizes"] == {"8x8": 10}


@pytest.mark.parametrize(
    "name", ["eyepacs", "idrid", "messidor2", "ddr", "retinamnist", "generic_csv", "folder"]
)
def test_inspect_json_for_every_source(name: str, capsys, request) -> None:
    layout: Layout = request.getfixturevalue(name)
    summary = inspect_json(layout, capsys)
    assert summary["n_images"] + sum(summary["excluded"].values()) == layout.rows
    assert summary["per_grade"] == {str(g): n for g, n in layout.per_grade.items()}
    assert summary["n_patients"] == layout.n_patients
    assert summary["official_splits"] == layout.splits
    assert summary["problems"] == []


def test_inspect_lists_bad_rows_and_keeps_the_good_ones(aptos: Layout, capsys) -> None:
    line = aptos.append("ffffffffffff,1\n000c1434d8d7,7\n")
    summary = inspect_json(aptos, capsys)
    assert summary["n_images"] == 10
    assert [p.split(": ", 1)[0] for p in summary["problems"]] == [
        f"{aptos.label}:{line}",
        f"{aptos.label}:{line + 1}",
    ]
    assert "not found" in summary["problems"][0]
    assert "diagnosis '7' is outside 0-4" in summary["problems"][1]


def test_inspect_lists_a_corrupt_image(aptos_jpg: Layout, capsys) -> None:
    corrupt = aptos_jpg.root / "train_images" / "001639a390f0.jpg"
    corrupt.write_bytes(np.random.default_rng(3).bytes(300))
    summary = inspect_json(aptos_jpg, capsys)
    (problem,) = summary["problems"]
    assert problem.startswith(f"{aptos_jpg.label}:3: unreadable image {corrupt}")


def test_inspect_without_reading_images(aptos_jpg: Layout, capsys) -> None:
    (aptos_jpg.root / "train_images" / "001639a390f0.jpg").write_bytes(b"not a jpeg")
    summary = inspect_json(aptos_jpg, capsys, "--no-images")
    assert summary["image_sizes"] == {} and summary["problems"] == []


def test_inspect_as_text(eyepacs: Layout, capsys) -> None:
    assert main(["inspect", "--source", "eyepacs", "--root", str(eyepacs.root)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("eyepacs: 9 images, 6 patients")
    assert "grade 0:       4  ( 44.4%)" in out
    assert "problems: 0" in out


def test_inspect_excluded_rows_are_shown(ddr: Layout, capsys) -> None:
    assert main(["inspect", "--source", "ddr", "--root", str(ddr.root)]) == 0
    assert "excluded: 2 ungradable (grade 5)" in capsys.readouterr().out


def test_an_error_exits_2_with_the_message_on_stderr(aptos: Layout, capsys) -> None:
    aptos.label.unlink()
    assert main(["inspect", "--source", "aptos", "--root", str(aptos.root), "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("drvae-data: error: ")
    assert f"{aptos.label}: label file not found" in captured.err


def test_a_missing_root_exits_2(tmp_path, capsys) -> None:
    missing = tmp_path.resolve() / "nowhere"
    assert main(["inspect", "--source", "aptos", "--root", str(missing)]) == 2
    assert f"{missing}: dataset root not found" in capsys.readouterr().err


@pytest.mark.parametrize(
    "option, expected",
    [
        ("image_column", "--option 'image_column': expected KEY=VALUE"),
        ("colour=red", "aptos reader"),
    ],
)
def test_bad_reader_options_exit_2(aptos: Layout, option: str, expected: str, capsys) -> None:
    argv = ["inspect", "--source", "aptos", "--root", str(aptos.root), "--option", option]
    assert main(argv) == 2
    assert expected in capsys.readouterr().err


def test_an_unknown_source_is_refused_by_the_parser(aptos: Layout, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["inspect", "--source", "kaggle", "--root", str(aptos.root)])
    assert exit_.value.code == 2
    assert "invalid choice: 'kaggle'" in capsys.readouterr().err


def test_prepare_builds_then_reuses_the_cache(aptos: Layout, tmp_path, capsys) -> None:
    argv = [
        "prepare",
        "--source",
        "aptos",
        "--root",
        str(aptos.root),
        "--size",
        "16",
        "--cache-dir",
        str(tmp_path / "cache"),
        "--workers",
        "1",
    ]
    assert main(argv) == 0
    first = capsys.readouterr().out
    assert "10 images at 16 px" in first and "\n  built in" in first
    assert main(argv) == 0
    assert "reused: was built" in capsys.readouterr().out
    assert len(list((tmp_path / "cache").glob("*/manifest.json"))) == 1


def test_split_prints_per_grade_counts_per_split(eyepacs: Layout, capsys) -> None:
    argv = [
        "split",
        "--source",
        "eyepacs",
        "--root",
        str(eyepacs.root),
        "--json",
        "--val-fraction",
        "0.25",
        "--test-fraction",
        "0.25",
    ]
    assert main(argv) == 0
    counts = json.loads(capsys.readouterr().out)
    assert set(counts) == {"train", "val", "test"}
    total = sum(sum(per_grade.values()) for per_grade in counts.values())
    assert total == eyepacs.rows


def test_simulate_writes_a_dataset_the_aptos_reader_reads(tmp_path, capsys) -> None:
    out = tmp_path / "sim"
    argv = [
        "simulate",
        "--out",
        str(out),
        "--n",
        "12",
        "--size",
        "32",
        "--workers",
        "1",
        "--fractions",
        "0.2,0.2,0.2,0.2,0.2",
    ]
    assert main(argv) == 0
    assert main(["inspect", "--source", "aptos", "--root", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.split("\n", 1)[1])
    assert summary["n_images"] == 12 and summary["image_sizes"] == {"32x32": 12}
    assert main(argv) == 2  # never overwrites an earlier dataset
    assert "already exists and is not an empty folder" in capsys.readouterr().err


def test_simulate_refuses_bad_fractions(tmp_path, capsys) -> None:
    argv = ["simulate", "--out", str(tmp_path / "s"), "--n", "5", "--fractions", "0.5,x"]
    assert main(argv) == 2
    assert "--fractions '0.5,x': expected 5 numbers" in capsys.readouterr().err


# --- errors when no row is usable -------------------------------------------------------


def test_a_dataset_whose_only_row_is_bad_names_the_row_and_the_grade(aptos: Layout) -> None:
    aptos.rewrite("id_code,diagnosis\n000c1434d8d7,7\n")
    with pytest.raises(NoUsableImages) as error:
        read_dataset("aptos", aptos.root, on_error="skip")
    assert f"{aptos.label}:2: diagnosis '7' is outside 0-4; expected an integer 0-4" in str(
        error.value
    )


def test_no_usable_images_lists_the_first_ten_problems_then_a_count(aptos: Layout) -> None:
    aptos.rewrite("id_code,diagnosis\n" + "".join(f"{i},9\n" for i, _ in APTOS) + "a,x\nb,x\n")
    with pytest.raises(NoUsableImages) as error:
        read_dataset("aptos", aptos.root, on_error="skip")
    lines = str(error.value).splitlines()
    assert "12 problem(s)" in lines[0]
    assert [line.split(": ")[0].strip() for line in lines[1:11]] == [
        f"{aptos.label}:{n}" for n in range(2, 12)
    ]
    assert lines[11:] == ["  ... and 2 more"]
    assert len(error.value.problems) == 12


def test_inspect_json_of_a_dataset_with_no_usable_image(aptos: Layout, capsys) -> None:
    aptos.rewrite("id_code,diagnosis\n000c1434d8d7,7\n")
    assert main(["inspect", "--source", "aptos", "--root", str(aptos.root), "--json"]) == 2
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert summary["n_images"] == 0
    assert summary["problems"] == [
        f"{aptos.label}:2: diagnosis '7' is outside 0-4; expected an integer 0-4"
    ]
    assert f"{aptos.label}:2: diagnosis '7'" in captured.err
