"""Stage `fidelity`: does the generator's output carry its grade (drvae.metrics.fidelity)?

The judge is the grading classifier trained on real images only (`Run.reference`, the same
stored stage as a `rebalance=none` job's classifier, so `make run` trains no extra model).
It grades the real TEST images, the VAE's reconstructions of them (each decoded with its
true grade by the VAE of that grade) and the synthetic set. Seconds of inference: on in the
default run, and part of the audit. The stage folder holds `fidelity_grid.png`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from torch import Tensor

from drvae.data.records import NUM_GRADES
from drvae.integrity import sha256_file
from drvae.metrics.fidelity import DEGRADATIONS, degrade, fidelity_table, judge_limits
from drvae.models.checkpoints import load_classifier, load_vae
from drvae.models.classifier import GradeClassifier
from drvae.pipeline.data import PreparedData
from drvae.pipeline.store import StageResult, StageStore, config_key
from drvae.report.audit_plots import fidelity_grid
from drvae.run_folder import CLASSIFIER, GRID

Judge = Callable[[np.ndarray], Tensor]  # uint8 (N, S, S, 3) -> (N, K) grade scores
Labelled = tuple[np.ndarray, np.ndarray]  # uint8 (N, S, S, 3) images, (N,) grades


def judge_of(model: GradeClassifier, batch_size: int) -> Judge:
    """The classifier's grade scores as its test split was graded (with its TTA, if any)."""

    @torch.no_grad()
    def judge(images: np.ndarray) -> Tensor:
        scores = [torch.empty(0, NUM_GRADES)]
        for start in range(0, len(images), batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size]))
            outputs = model.evaluate(batch.permute(0, 3, 1, 2).to(model.device))  # (B, K)
            scores.append(model.grade_probabilities(outputs).cpu())
        return torch.cat(scores)

    return judge


def reconstructions(
    checkpoints: Mapping[int, Path], images: np.ndarray, grades: np.ndarray, batch_size: int
) -> Labelled:
    """Each image of a grade that has a VAE decoded from its posterior mean, with its true
    grade, by that grade's VAE (one conditional VAE, or one per grade)."""
    keep = np.isin(grades, list(checkpoints))
    images, grades = images[keep], grades[keep]
    out = np.empty_like(images)
    for path in sorted({checkpoints[g] for g in np.unique(grades)}):
        vae = load_vae(path)
        own = np.flatnonzero(np.isin(grades, [g for g, p in checkpoints.items() if p == path]))
        for start in range(0, len(own), batch_size):
            rows = own[start : start + batch_size]
            x = torch.from_numpy(images[rows]).permute(0, 3, 1, 2)  # (B, 3, S, S) uint8
            y = vae.reconstruct(x, torch.from_numpy(grades[rows]))  # (B, 3, S, S) in [0, 1]
            out[rows] = (y * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    return out, grades


def measure(judge: Judge, real: Labelled, recon: Labelled, synthetic: Labelled) -> dict[str, Any]:
    """The fidelity table of the three sets, each (images, grades: true or requested)."""
    sets = {"real": real, "recon": recon, "synthetic": synthetic}
    return fidelity_table({name: (torch.as_tensor(g), judge(x)) for name, (x, g) in sets.items()})


def measure_judge(judge: Judge, real: Labelled) -> dict[str, Any]:
    """The judge's recall on the real images under each of DEGRADATIONS (its limits)."""
    images, grades = torch.from_numpy(real[0]), torch.as_tensor(real[1])
    scores = {kind: judge(degrade(images, kind).numpy()) for kind in DEGRADATIONS}
    return judge_limits(grades, scores)


def _grid_blocks(real: Labelled, recon: Labelled, synthetic: Labelled) -> dict[int, tuple]:
    """grade -> (its real images, their reconstructions, its samples), grades with samples.
    Reconstructions cover the grades that have a VAE: those that have samples."""
    return {
        g: (real[0][real[1] == g], recon[0][recon[1] == g], synthetic[0][synthetic[1] == g])
        for g in np.unique(synthetic[1]).tolist()
    }


def fidelity_key(
    data: PreparedData,
    synthetic_key: str,
    reference: StageResult,
    checkpoints: Mapping[int, Path],
    grid: int,
) -> str:
    """Over the test split, the set, the judge and the VAEs that reconstruct."""
    digests = {p: sha256_file(p) for p in set(checkpoints.values())}  # each file once
    shas = {g: digests[p] for g, p in checkpoints.items()}
    settings = {"grid": grid, "judge_limits": DEGRADATIONS}
    return config_key("fidelity", data.key, synthetic_key, reference.key, shas, settings)


def run_fidelity_stage(
    cfg: DictConfig,
    data: PreparedData,
    synthetic: tuple[str, Callable[[], tuple[np.ndarray, np.ndarray]]],
    checkpoints: Mapping[int, Path],
    reference: StageResult,
    store: StageStore,
) -> StageResult:
    """Judge (or reuse the judging of) the real test images, their reconstructions and a
    synthetic set: `synthetic` is (the set's key, what reads its images and requested
    grades: called only when the stage is built)."""
    synthetic_key, read = synthetic
    a = cfg.audit
    key = fidelity_key(data, synthetic_key, reference, checkpoints, a.fidelity_grid)

    def build(tmp: Path) -> dict[str, Any]:
        test = data.splits.test
        real = (np.asarray(data.cache.images[test]), data.cache.grades[test])
        recon = reconstructions(checkpoints, *real, cfg.generate.batch_size)
        judge = judge_of(load_classifier(reference.path / CLASSIFIER), a.batch_size)
        images = read()  # (images, requested grades)
        report = measure(judge, real, recon, images) | {"judge_limits": measure_judge(judge, real)}
        blocks = _grid_blocks(real, recon, images)
        grid = fidelity_grid(blocks, a.fidelity_grid, tmp / GRID)
        return {**report, "judge": reference.key, "grid": grid}

    result = store.run("fidelity", key, build)
    result.info = {**result.info, "grid": str(result.path / GRID)}
    return result
