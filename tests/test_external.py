"""External test sets: the chosen classifier scored on another dataset, in results.json, W&B
and the report; images that duplicate training images are left out."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TEST_GRADES, config, metrics_of, write_job  # tests/ is on sys.path

from drvae.data.simulator import simulate_dataset
from drvae.errors import ConfigError
from drvae.pipeline.data import prepare_data
from drvae.pipeline.run import run
from drvae.pipeline.store import StageStore
from drvae.report.table import compare, csv_rows, report
from drvae.run_folder import PREDICTIONS, external_predictions, write_predictions
from drvae.tracking import summary

N_EXTERNAL, N_COPIES = 40, 6


def add_copies(train: Path, external: Path) -> list[tuple[str, str]]:
    """Copy the first N_COPIES training images into the external set under new ids:
    (copy id, original id)."""
    rows = list(csv.reader((train / "train.csv").open()))[1 : N_COPIES + 1]
    with (external / "train.csv").open("a") as f:
        for image_id, grade in rows:
            copy = f"copy_{image_id}"
            shutil.copyfile(
                train / "train_images" / f"{image_id}.png",
                external / "train_images" / f"{copy}.png",
            )
            f.write(f"{copy},{grade}\n")
    return [(f"copy_{i}", i) for i, _ in rows]


@pytest.fixture(scope="module")
def sets(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("external")
    simulate_dataset(root / "train", n=300, size=32, seed=0, workers=1)
    simulate_dataset(root / "ext", n=N_EXTERNAL, size=32, seed=7, workers=1)
    copies = add_copies(root / "train", root / "ext")
    cache = root / "cache"
    common = ["data=aptos", f"data.root={root / 'train'}", "rebalance=none"]
    without = run(config(cache, root / "run0", *common))
    external = ["+test_sets.ext.source=aptos", f"+test_sets.ext.root={root / 'ext'}"]
    cfg = config(cache, root / "run1", *common, *external)
    return {
        "without": without,
        "with": run(cfg),
        "cfg": cfg,
        "copies": copies,
        "out": root / "run1",
        "cache": cache,
    }


def test_external_metrics_have_the_test_keys(sets: dict) -> None:
    results = sets["with"]
    scored = results["external"]["ext"]
    assert set(scored["metrics"]) == set(results["metrics"])
    assert sum(scored["per_grade"].values()) == scored["n_images"]
    matrix = np.array(scored["confusion_matrix"])
    assert matrix.sum() == scored["n_images"]
    rows = {int(g): n for g, n in scored["per_grade"].items()}  # each image in its grade's row
    assert matrix.sum(axis=1).tolist() == [rows.get(g, 0) for g in range(5)]
    present = matrix.sum(axis=1) > 0
    recall = np.diag(matrix)[present] / matrix.sum(axis=1)[present]
    balanced = scored["metrics"]["test/balanced_accuracy"]
    assert balanced == pytest.approx(recall.mean(), abs=1e-4)  # metrics: 4 places


def test_the_stored_classifier_is_reused_with_or_without_test_sets(sets: dict) -> None:
    first, second = sets["without"]["stages"]["classifier"], sets["with"]["stages"]["classifier"]
    assert second["key"] == first["key"] and second["reused"]
    assert sets["with"]["metrics"] == sets["without"]["metrics"]


def test_copies_of_training_images_are_left_out(sets: dict) -> None:
    data = prepare_data(sets["cfg"].data, StageStore(sets["cache"]))
    train = {data.cache.records[i].image_id for i in data.splits.train}
    expected = sorted((c, o) for c, o in sets["copies"] if o in train)
    assert expected  # some copied images are training images, some may be val or test
    scored = sets["with"]["external"]["ext"]
    left_out = scored["duplicates_of_training"]
    assert sorted(map(tuple, left_out["pairs"])) == expected
    assert left_out["n_excluded"] == len(expected)
    assert scored["n_images"] == N_EXTERNAL + N_COPIES - len(expected)


def test_external_predictions_are_written_like_the_test_splits(sets: dict) -> None:
    out, scored = sets["out"], sets["with"]["external"]["ext"]
    with (out / external_predictions("ext")).open() as f:
        rows = list(csv.DictReader(f))
    with (out / PREDICTIONS).open() as f:
        assert next(iter(csv.DictReader(f))).keys() == rows[0].keys()
    assert len(rows) == scored["n_images"]
    left_out = {c for c, _ in scored["duplicates_of_training"]["pairs"]}
    assert not left_out & {r["image"] for r in rows}
    accuracy = np.mean([r["grade"] == r["predicted"] for r in rows])
    assert accuracy == pytest.approx(scored["metrics"]["test/accuracy"], abs=1e-4)


def test_wandb_summary_holds_the_external_metrics(sets: dict) -> None:
    values = summary(sets["with"])
    scored = sets["with"]["external"]["ext"]
    assert values["external/ext/qwk"] == scored["metrics"]["test/qwk"]
    assert values["external/ext/n_images"] == scored["n_images"]


def test_a_test_set_without_a_source_is_refused(tmp_path: Path) -> None:
    cfg = config(tmp_path, tmp_path / "out", "rebalance=none", f"+test_sets.x.root={tmp_path}")
    with pytest.raises(ConfigError, match=r"test_sets\.x: expected source and root"):
        run(cfg)


def _external_block(folder: Path, predicted: np.ndarray) -> None:
    """Add an external set `ext` (the same images as the test split) to a written job."""
    probs = np.full((len(TEST_GRADES), 5), 0.1)
    probs[np.arange(len(TEST_GRADES)), predicted] = 0.6
    ids = [f"ext{i}" for i in range(len(TEST_GRADES))]
    path = folder / external_predictions("ext")
    write_predictions(path, ids, torch.tensor(probs), torch.tensor(TEST_GRADES))
    results = json.loads((folder / "results.json").read_text())
    results["external"] = {"ext": {"metrics": metrics_of(predicted), "n_images": len(TEST_GRADES)}}
    (folder / "results.json").write_text(json.dumps(results))


def test_the_report_has_a_table_per_external_set(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for job, strategy in enumerate(["none", "oversample"]):
        for seed in range(2):
            folder = tmp_path / f"{job * 2 + seed}"
            predicted = np.where(rng.random(len(TEST_GRADES)) < 0.7, TEST_GRADES, 0)
            write_job(folder, [f"rebalance={strategy}", f"seed={seed}"], None, None, predicted)
            worse = np.where(rng.random(len(TEST_GRADES)) < (0.3 if job else 0.7), TEST_GRADES, 0)
            _external_block(folder, worse)
    found = compare(tmp_path, replicates=200)
    seen = found.external["ext"]
    delta = seen.deltas["rebalance=oversample"]["test/qwk"]
    assert delta.delta < 0 and delta.high is not None and delta.low < delta.high
    assert delta.delta != found.deltas["rebalance=oversample"]["test/qwk"].delta
    text = report(tmp_path, replicates=200)
    section = text.split("## External test set ext (100 images)")[1]
    assert "bootstrap over the ext images" in section
    assert "| qwk |" in section and "val/loss" not in section.split("## Failed")[0]
    rows = csv_rows(found)
    assert ["rebalance=oversample", "external/ext/test/qwk"] in [row[:2] for row in rows]
    (tmp_path / "1" / external_predictions("ext")).unlink()
    why = compare(tmp_path, replicates=50).external["ext"].no_ci["rebalance=oversample"]
    assert why == f"no {external_predictions('ext')} in job 1"
