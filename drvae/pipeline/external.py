"""External test sets (`test_sets.NAME: {source, root, options}`): the classifier's chosen
checkpoint scored on every image of another dataset (its official splits all count as test),
preprocessed like `data` through the same cache.

Scoring runs the test split's own path (`classifier_stage.test_scores`), so whatever the
classifier makes of its outputs applies here too. It happens in the run, after the classifier
stage, and its results go to the run folder: the stage's key, and so a stored classifier, do
not depend on the test sets. Images that duplicate a training image (exactly or nearly, see
`drvae.data.duplicates`) are reported and left out of the metrics.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from drvae.data.cache import CachedDataset
from drvae.data.dataset import FundusDataModule
from drvae.data.duplicates import NEAR_DISTANCE, matches
from drvae.data.records import NUM_GRADES, DataError
from drvae.data.splits import Splits
from drvae.models.checkpoints import load_classifier
from drvae.pipeline.classifier_stage import test_scores
from drvae.pipeline.data import PreparedData, cache_dataset, set_config, stored_hashes
from drvae.pipeline.store import StageStore
from drvae.pipeline.training import make_trainer, rounded
from drvae.run_folder import external_predictions, write_predictions

SHOWN_IDS = 20  # duplicate ids listed in results.json per set (all are counted)


def _scored(cache: CachedDataset, left_out: dict[int, int]) -> np.ndarray:
    return np.array([i for i in range(len(cache)) if i not in left_out], dtype=np.int64)


def _duplicates(
    data: PreparedData, cache: CachedDataset, store: StageStore, cfg: DictConfig
) -> dict[int, int]:
    """External record index -> the training record index it duplicates."""
    if data.hashes is None:
        return {}
    distance = cfg.data.get("duplicate_distance", NEAR_DISTANCE)
    external = stored_hashes(cache, store, cfg.data.decode_workers)
    return matches(external, data.hashes.subset(data.splits.train), distance)


def score_set(
    cfg: DictConfig, name: str, data: PreparedData, checkpoint: Path, store: StageStore, out: Path
) -> dict[str, Any]:
    """One external set's metrics, counts, left-out duplicates and predictions file."""
    cache = cache_dataset(set_config(cfg, "test_sets", name), store)
    left_out = _duplicates(data, cache, store, cfg)
    scored = _scored(cache, left_out)
    if not len(scored):
        raise DataError(f"test_sets.{name}: every image duplicates a training image")
    empty = np.zeros(0, dtype=np.int64)
    dm = FundusDataModule(
        cache, Splits(empty, empty, scored), cfg.classifier.batch_size, cfg.data.num_workers
    )
    one = {"devices": 1, "num_nodes": 1, "strategy": "auto"}  # every image scored once
    trainer = make_trainer(cfg, "classifier", f"external_{name}", out / "logs", [], **one)
    model = load_classifier(checkpoint)
    tested, probs, grades = test_scores(trainer, model, dm)
    out.mkdir(parents=True, exist_ok=True)
    predictions = out / external_predictions(name)
    ids = [cache.records[i].image_id for i in scored[: len(grades)]]  # a prefix under limits
    write_predictions(predictions, ids, probs, grades)
    counts = Counter(int(g) for g in grades)
    train = data.cache.records
    return {
        "source": cache.records[0].source,
        "cache": str(cache.folder),
        "metrics": rounded({k: v for k, v in tested.items() if k != "test/loss"}),
        "n_images": len(grades),
        "per_grade": {g: counts.get(g, 0) for g in range(NUM_GRADES)},
        "confusion_matrix": model.last_confusion["test"].tolist(),
        "duplicates_of_training": {
            "n_excluded": len(left_out),
            "pairs": [
                [cache.records[i].image_id, train[j].image_id]
                for i, j in list(left_out.items())[:SHOWN_IDS]
            ],
        },
        "predictions": str(predictions),
    }


def score_external(
    cfg: DictConfig, data: PreparedData, checkpoint: Path, store: StageStore, out: Path
) -> dict[str, dict[str, Any]]:
    """Every configured external set, scored with the classifier `checkpoint`."""
    results = {}
    for name in cfg.get("test_sets") or {}:
        results[str(name)] = score_set(cfg, str(name), data, checkpoint, store, out)
        metrics = results[str(name)]["metrics"]
        print(f"external {name}: {results[str(name)]['n_images']} images, {metrics}")
    return results
