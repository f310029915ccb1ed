"""What the generator-ablation probes share: a run's data, VAE and judge, loaded back from
the stage cache, and the figures they report on a set of images (the judge's grading and
the audit's pixel memorisation)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf
from torch import Tensor

from drvae.metrics.audit import memorisation, nearest_neighbours
from drvae.metrics.fidelity import judged
from drvae.models.checkpoints import load_classifier, load_vae
from drvae.models.vae import ConditionalVAE
from drvae.pipeline.audit_stage import pixel_rows
from drvae.pipeline.data import PreparedData, prepare_data
from drvae.pipeline.fidelity_stage import Judge, judge_of
from drvae.pipeline.store import StageStore


def checkpoint(results: dict, stage: str) -> Path:
    path = Path(results["stages"].get(stage, {}).get("path", ""))
    if not path.is_file():
        raise SystemExit(f"results.json: stages.{stage}.path {str(path)!r} is not a file")
    return path


@dataclass(frozen=True)
class ProbeRun:
    """RUN_DIR (a run folder with `audit_reference` and `vae` stages, or a committed copy of
    one, its checkpoints still in the stage cache) and the reference its figures need."""

    data: PreparedData
    vae: ConditionalVAE
    judge: Judge
    train: Tensor  # the training images' pixel rows
    heldout_distance: Tensor  # each held-out image's distance to its nearest training image

    @classmethod
    def load(cls, run: Path) -> ProbeRun:
        results = json.loads((run / "results.json").read_text())
        cfg = OmegaConf.create(results["config"])
        data = prepare_data(cfg.data, StageStore(cfg.paths.cache_dir))
        images = data.cache.images
        train = pixel_rows(np.asarray(images[data.splits.train]))
        heldout = np.concatenate([data.splits.val, data.splits.test])
        distance, _ = nearest_neighbours(pixel_rows(np.asarray(images[heldout])), train)
        return cls(
            data,
            load_vae(checkpoint(results, "vae")),
            judge_of(load_classifier(checkpoint(results, "audit_reference")), 64),
            train,
            distance,
        )

    def graded(self, grades: Tensor, images: np.ndarray) -> dict[str, Any]:
        """The judge on (N, S, S, 3) uint8 images against `grades`: pooled accuracy, QWK
        and recall per grade, rounded."""
        grading = judged(grades, self.judge(images))
        return {
            "accuracy": round(grading["accuracy"], 4),
            "qwk": round(grading["qwk"], 4),
            "recall": {g: round(v, 3) for g, v in grading["recall"].items()},
        }

    def memorised(self, images: np.ndarray) -> dict[str, float]:
        """The audit's pixel memorisation figures of (N, S, S, 3) uint8 images, rounded."""
        distance, _ = nearest_neighbours(pixel_rows(images), self.train)
        return {k: round(v, 4) for k, v in memorisation(distance, self.heldout_distance).items()}
