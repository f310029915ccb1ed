"""The run-folder contract: what a job leaves in its folder and in the stage store, by name,
and the readers and writers of the files other layers read back. Every layer (pipeline,
report, tracking) spells these names through here; this module imports no other layer.

A job's folder (`paths.output_dir`):
    results.json                  what the run did and measured (docs/results.md)
    failed.json                   why it failed, instead of results.json
    test_predictions.csv          one row per real test image: `image`, `grade`, `predicted`,
                                  `p0`..`p4` (the classifier stage writes it beside its
                                  checkpoint; a report compares runs image by image from it)
    external_NAME_predictions.csv the same for external test set NAME
    fidelity_grid.png             real | reconstruction | samples per grade (fidelity stage)
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from drvae.data.records import NUM_GRADES, DataError

STAGES = ("vae", "generate", "classifier", "fidelity", "audit")  # in the order they run
RESULTS = "results.json"
FAILED = "failed.json"
PREDICTIONS = "test_predictions.csv"
GRID = "fidelity_grid.png"
CLASSIFIER = "classifier.ckpt"  # in the classifier stage's folder
SHARED_VAE = "vae.ckpt"  # one VAE conditioned on the grade (vae.model.num_classes > 0)


def grade_vae(grade: int) -> str:
    """The checkpoint of the VAE trained on one grade only (vae.model.num_classes=0)."""
    return f"vae_grade{grade}.ckpt"


def vae_files(per_grade: bool) -> dict[str, list[int] | None]:
    """The vae stage's checkpoint file names -> the grades each one draws (None: every grade,
    conditioned on it)."""
    if not per_grade:
        return {SHARED_VAE: None}
    return {grade_vae(g): [g] for g in range(NUM_GRADES)}


def vae_checkpoints(files: dict[str, str]) -> dict[int, Path]:
    """Grade -> the checkpoint that grade is drawn from, from the vae stage's files."""
    paths = {name: Path(p) for name, p in files.items()}
    if SHARED_VAE in paths:
        return dict.fromkeys(range(NUM_GRADES), paths[SHARED_VAE])
    return {g: paths[grade_vae(g)] for g in range(NUM_GRADES)}


def read_json(path: Path) -> dict[str, Any] | None:
    """A results.json or failed.json; None when the file is not there."""
    return json.loads(path.read_text()) if path.is_file() else None


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
