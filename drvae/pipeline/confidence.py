"""Confidence-filtered synthetic sets (`rebalance.min_confidence`).

The classifier trained on real images only (the audit's reference) grades each generated
image; only those it gives at least `min_confidence` probability of their requested grade
join the training split. Generation is prefix-stable, so asking for more images extends the
set: it doubles until every grade has enough accepted images, up to `max_generated` times
what the rebalancing adds, and fails with a clear error beyond that.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from drvae.data.dataset import FixedSynthetic
from drvae.data.synthetic import read_synthetic_images
from drvae.errors import ConfigError
from drvae.models.checkpoints import load_classifier
from drvae.models.classifier_outputs import classifier_outputs
from drvae.pipeline.generate_stage import run_generate_stage
from drvae.pipeline.sampler_stage import FittedSampler
from drvae.pipeline.store import StageResult, StageStore, config_key
from drvae.run_folder import CLASSIFIER


def accepted(
    images: FixedSynthetic, p_requested: np.ndarray, needed: Mapping[int, int], threshold: float
) -> tuple[FixedSynthetic, dict[int, dict[str, int]]]:
    """The first `needed[g]` images of each grade with p(requested grade) >= threshold, and
    per grade how many were generated and accepted."""
    chosen, stats = [], {}
    for grade, n in needed.items():
        of_grade = images.grades == grade
        ok = np.flatnonzero(of_grade & (p_requested >= threshold))
        stats[grade] = {"generated": int(of_grade.sum()), "accepted": len(ok), "needed": n}
        chosen.append(ok[:n])
    index = np.concatenate(chosen)
    return FixedSynthetic(images.images[index], images.grades[index]), stats


def _shortfall(stats: Mapping[int, Mapping[str, int]]) -> dict[int, tuple[int, int]]:
    return {
        g: (s["accepted"], s["needed"]) for g, s in stats.items() if s["accepted"] < s["needed"]
    }


def confident_synthetic(
    cfg: DictConfig,
    image_size: int,
    checkpoints: Mapping[int, Path],
    needed: Mapping[int, int],
    reference: StageResult,
    store: StageStore,
    sampler: FittedSampler | None = None,
) -> tuple[FixedSynthetic, str, StageResult, dict[str, Any]]:
    """The filtered synthetic images, a key over them, the generate stage that wrote the
    candidates (its latents from `sampler`; None: the prior), and what the filter did."""
    r, needed = cfg.rebalance, {g: n for g, n in needed.items() if n}
    model = load_classifier(reference.path / CLASSIFIER)
    factor = 2
    while True:
        counts = {g: n * factor for g, n in needed.items()}
        generated = run_generate_stage(cfg.generate, counts, checkpoints, store, sampler)
        candidates = read_synthetic_images(generated.path, counts, image_size)
        _, probabilities = classifier_outputs(model, candidates.images)
        p = probabilities.numpy()[np.arange(len(candidates.grades)), candidates.grades]
        chosen, stats = accepted(candidates, p, needed, r.min_confidence)
        short = _shortfall(stats)
        if not short:
            break
        if factor >= r.max_generated:
            raise ConfigError(
                f"rebalance.min_confidence={r.min_confidence}: after generating "
                f"{r.max_generated}x the images needed, too few reach it per grade "
                f"(accepted, needed) {short}; lower it or raise rebalance.max_generated"
            )
        factor = min(factor * 2, r.max_generated)
    key = config_key("confident", generated.key, r.min_confidence, reference.key)
    info = {"min_confidence": r.min_confidence, "reference": reference.key, "per_grade": stats}
    return chosen, key, generated, info
