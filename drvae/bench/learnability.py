"""Learnability of the simulator: a small timm CNN from scratch, scored on held-out images."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
from sklearn.metrics import balanced_accuracy_score, cohen_kappa_score, recall_score

from drvae.data.cache import build_cache
from drvae.data.preprocess import PreprocessConfig
from drvae.data.readers import read_dataset
from drvae.data.simulator import simulate_dataset
from drvae.data.splits import make_splits


def _batches(
    images: np.ndarray, grades: np.ndarray, batch: int, shuffle: bool, rng: np.random.Generator
):
    order = rng.permutation(len(images)) if shuffle else np.arange(len(images))
    for start in range(0, len(order), batch):
        idx = np.sort(order[start : start + batch])
        x = torch.from_numpy(np.ascontiguousarray(images[idx])).permute(0, 3, 1, 2)
        yield x.float().div(255), torch.from_numpy(grades[idx])  # (B, 3, S, S), (B,)


def train_small_cnn(
    images: np.ndarray, grades: np.ndarray, splits, epochs: int, seed: int = 0
) -> dict[str, Any]:
    """resnet10t from scratch, AdamW, horizontal flips; scored on the test split."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = timm.create_model("resnet10t", pretrained=False, num_classes=5)
    optimiser = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    train_x, train_y = images[splits.train], grades[splits.train]
    start = time.perf_counter()
    for _ in range(epochs):
        model.train()
        for x, y in _batches(train_x, train_y, 64, True, rng):
            x = torch.where(torch.rand(len(x), 1, 1, 1) < 0.5, x.flip(3), x)
            loss = torch.nn.functional.cross_entropy(model(x), y)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    seconds = time.perf_counter() - start
    model.eval()
    with torch.no_grad():
        test_y = grades[splits.test]
        logits = [model(x) for x, _ in _batches(images[splits.test], test_y, 256, False, rng)]
    predicted = torch.cat(logits).argmax(1).numpy()
    return {
        "epochs": epochs,
        "train_images": len(train_y),
        "test_images": len(test_y),
        "train_seconds": round(seconds, 1),
        "accuracy": round(float((predicted == test_y).mean()), 3),
        "balanced_accuracy": round(balanced_accuracy_score(test_y, predicted), 3),
        "qwk": round(cohen_kappa_score(test_y, predicted, weights="quadratic"), 3),
        "recall_per_grade": [
            round(float(r), 3) for r in recall_score(test_y, predicted, average=None)
        ],
        "majority_class_accuracy": round(float(np.bincount(test_y).max() / len(test_y)), 3),
    }


def bench_learnability(
    work: Path, n: int, size: int, epochs: int, fractions: tuple[float, ...]
) -> dict[str, Any]:
    root = work / f"learn{size}-{len(list(work.iterdir()))}"
    simulate_dataset(root, n, size=128, seed=1, fractions=fractions, workers=2)
    records = read_dataset("aptos", root).records
    cache = build_cache(records, PreprocessConfig(size=size), work / "cache", workers=2)
    splits = make_splits(cache.records, seed=0)
    result = train_small_cnn(np.asarray(cache.images), cache.grades, splits, epochs)
    return {"n": n, "size": size, "grade_fractions": list(fractions), **result}
