"""The readers on the real datasets in ../shared/data: exact published counts.

These run only where that folder exists (a developer's or the CI's machine, never a user's);
elsewhere they skip, saying why.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from conftest import real_dataset  # tests/ is on sys.path

from drvae.data.cli import main

pytestmark = pytest.mark.data


def inspect(source: str, root: Path, capsys) -> dict:
    assert main(["inspect", "--source", source, "--root", str(root), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["problems"] == []
    assert summary["excluded"] == {}
    return summary


def grades(*counts: int) -> dict[str, int]:
    return {str(g): n for g, n in enumerate(counts)}  # JSON keys are strings


def test_aptos2019(capsys) -> None:
    summary = inspect("aptos", real_dataset("aptos2019"), capsys)
    assert summary["n_images"] == 3662
    assert summary["per_grade"] == grades(1805, 370, 999, 193, 295)
    assert summary["n_patients"] == 3662  # APTOS has no patient ids
    assert sum(summary["image_sizes"].values()) == 3662


def test_eyepacs64(capsys) -> None:
    root = real_dataset("eyepacs64")
    summary = inspect("eyepacs", root, capsys)
    assert summary["n_images"] == 5000
    assert summary["per_grade"] == grades(3707, 347, 726, 126, 94)
    with (root / "trainLabels.csv").open(newline="") as f:
        patients = {row["image"].rsplit("_", 1)[0] for row in csv.DictReader(f)}
    assert summary["n_patients"] == len(patients)
    assert summary["n_patients"] < 5000  # both eyes of some patients
    assert summary["image_sizes"] == {"64x64": 5000}


def test_retinamnist(capsys) -> None:
    summary = inspect("retinamnist", real_dataset("retinamnist"), capsys)
    assert summary["n_images"] == 1600
    assert summary["official_splits"] == {"train": 1080, "val": 120, "test": 400}
    assert summary["per_grade"] == grades(714, 186, 326, 282, 92)
    assert summary["image_sizes"] == {"28x28": 1600}


def test_eyepacs64_cache_and_patient_grouped_splits(tmp_path: Path) -> None:
    from drvae.data.cache import build_cache
    from drvae.data.preprocess import PreprocessConfig
    from drvae.data.readers import read_dataset
    from drvae.data.splits import make_splits

    records = read_dataset("eyepacs", real_dataset("eyepacs64")).records
    cached = build_cache(records, PreprocessConfig(size=64), tmp_path, workers=2)
    assert cached.images.shape == (5000, 64, 64, 3)
    corners = cached.images[:, [0, 0, -1, -1], [0, -1, 0, -1]]  # (N, 4, 3)
    assert (corners.max(axis=(1, 2)) < 40).mean() > 0.95  # field of view cropped, black around
    splits = make_splits(cached.records, seed=0)
    patients = [
        {cached.records[i].patient for i in part}
        for part in (splits.train, splits.val, splits.test)
    ]
    assert not (patients[0] & patients[1] or patients[0] & patients[2] or patients[1] & patients[2])
    assert len(splits.train) + len(splits.val) + len(splits.test) == 5000


def test_pipeline_on_real_eyepacs(tmp_path: Path) -> None:
    """The pipeline on real photographs: patient-grouped splits, one epoch of each model, a
    synthetic set, and a classifier scored on the real test split."""
    from hydra import compose, initialize_config_module

    from drvae.data.readers import read_dataset
    from drvae.pipeline.run import run

    root = real_dataset("eyepacs64")
    overrides = [
        "data=eyepacs", f"data.root={root}", "data.image_size=32", "vae.model.depth=3",
        "vae.model.width=8", "trainer.max_epochs=1", "trainer.limit_train_batches=10",
        "trainer.enable_progress_bar=false", "rebalance.per_grade=3",
        "classifier.model.model_name=test_resnet",
        f"paths.cache_dir={tmp_path / 'cache'}", f"paths.output_dir={tmp_path / 'run'}",
    ]  # fmt: skip
    with initialize_config_module(config_module="drvae.conf", version_base="1.3"):
        results = run(compose("config", overrides=overrides))
    counts = results["data"]["counts"]
    assert sum(sum(split.values()) for split in counts.values()) == 5000
    assert results["stages"]["vae"]["metrics"]["val/elbo"] < 0
    synthetic = read_dataset("synthetic", results["stages"]["generate"]["path"])
    assert len(synthetic.records) == 15 and all(r.synthetic for r in synthetic.records)
    assert results["counts"]["test"] == counts["test"]  # real test images, untouched
    assert results["counts"]["train_synthetic"] == dict.fromkeys(range(5), 3)
    matrix = results["stages"]["classifier"]["confusion_matrix"]  # every test image, once
    assert [sum(row) for row in matrix] == [counts["test"][g] for g in range(5)]


@pytest.mark.slow
def test_paper_replication_composes_on_real_aptos(tmp_path: Path) -> None:
    """The experiment as committed: APTOS at 128 px, a VAE on 100 images per grade, 100
    synthetic per grade; one batch per stage (the committed run used 64 px and more epochs)."""
    from hydra import compose, initialize_config_module

    from drvae.pipeline.run import run

    overrides = [
        "experiment=paper_replication", f"data.root={real_dataset('aptos2019')}",
        "++trainer.fast_dev_run=true", "trainer.enable_progress_bar=false",
        f"paths.cache_dir={tmp_path / 'cache'}", f"paths.output_dir={tmp_path / 'run'}",
    ]  # fmt: skip
    with initialize_config_module(config_module="drvae.conf", version_base="1.3"):
        results = run(compose("config", overrides=overrides))
    assert results["config"]["data"]["image_size"] == 128
    assert results["counts"]["train_synthetic"] == dict.fromkeys(range(5), 100)
    assert sum(results["counts"]["test"].values()) == 523  # the real, held-out test split
