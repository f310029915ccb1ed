"""The readers on the real datasets in ../shared/data: exact published counts.

These run only where that folder exists (a developer's or the CI's machine, never a user's);
elsewhere they skip, saying why.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from drvae.data.cli import main

pytestmark = pytest.mark.data

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def dataset(name: str) -> Path:
    root = DATA / name
    if not root.is_dir():
        pytest.skip(f"real dataset {root} not found (the datasets live in ../shared/data)")
    return root


def inspect(source: str, root: Path, capsys) -> dict:
    assert main(["inspect", "--source", source, "--root", str(root), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["problems"] == []
    assert summary["excluded"] == {}
    return summary


def grades(*counts: int) -> dict[str, int]:
    return {str(g): n for g, n in enumerate(counts)}  # JSON keys are strings


def test_aptos2019(capsys) -> None:
    summary = inspect("aptos", dataset("aptos2019"), capsys)
    assert summary["n_images"] == 3662
    assert summary["per_grade"] == grades(1805, 370, 999, 193, 295)
    assert summary["n_patients"] == 3662  # APTOS has no patient ids
    assert sum(summary["image_sizes"].values()) == 3662


def test_eyepacs64(capsys) -> None:
    root = dataset("eyepacs64")
    summary = inspect("eyepacs", root, capsys)
    assert summary["n_images"] == 5000
    assert summary["per_grade"] == grades(3707, 347, 726, 126, 94)
    with (root / "trainLabels.csv").open(newline="") as f:
        patients = {row["image"].rsplit("_", 1)[0] for row in csv.DictReader(f)}
    assert summary["n_patients"] == len(patients)
    assert summary["n_patients"] < 5000  # both eyes of some patients
    assert summary["image_sizes"] == {"64x64": 5000}


def test_retinamnist(capsys) -> None:
    summary = inspect("retinamnist", dataset("retinamnist"), capsys)
    assert summary["n_images"] == 1600
    assert summary["official_splits"] == {"train": 1080, "val": 120, "test": 400}
    assert summary["per_grade"] == grades(714, 186, 326, 282, 92)
    assert summary["image_sizes"] == {"28x28": 1600}
