"""Per-image test predictions, `test_predictions.csv`: one row per real test image (`image`,
`grade`, `predicted`, `p0`..`p4`). The classifier stage writes it beside its checkpoint and
every run copies it into its folder, so that a report can compare runs image by image (a
paired bootstrap over the same test images) without the stage store."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from torch import Tensor

from drvae.data.records import DataError

PREDICTIONS = "test_predictions.csv"


def external_predictions(name: str) -> str:
    """The file name of an external test set's predictions, in the run folder."""
    return f"external_{name}_predictions.csv"


def write_predictions(path: Path, image_ids: list[str], probs: Tensor, grades: Tensor) -> None:
    if len(image_ids) != len(grades):
        raise ValueError(f"{len(image_ids)} test images but {len(grades)} predictions")
    k = probs.shape[1]
    with open(path, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["image", "grade", "predicted", *(f"p{g}" for g in range(k))])
        for image, grade, p in zip(image_ids, grades.tolist(), probs.tolist(), strict=True):
            out.writerow([image, grade, int(np.argmax(p)), *(f"{v:.6f}" for v in p)])


def read_predictions(path: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(image ids, (N,) true grades, (N, K) probabilities); DataError for a damaged file."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        if not rows:
            raise ValueError("no rows")
        k = sum(1 for name in rows[0] if name.startswith("p") and name[1:].isdigit())
        grades = np.array([int(r["grade"]) for r in rows])
        probs = np.array([[float(r[f"p{g}"]) for g in range(k)] for r in rows])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise DataError(f"{path}: not a readable predictions file ({error})") from error
    return [r["image"] for r in rows], grades, probs
