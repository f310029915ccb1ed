"""Generator fidelity: does the VAE's output carry its grade? Judged by a classifier trained
on real images only, on three sets: the real test images, the VAE's reconstructions of those
same images (decoded with their true grade), and the synthetic set (judged against the grade
it was asked for: class consistency). A reconstruction that keeps the judge's recall shows
the latent carries what grades a fundus; samples that keep it show the sampler reaches it.

The judge's own limits are measured too (`degrade`): its recall on the real test images
blurred, halved in resolution or with sensor-like noise added. A judge that loses a grade
under a 1-pixel blur cannot credit a generator that is not sharper than that, and one that
reads noise as lesions will credit noisy samples with high grades.

Pure functions on tensors: (N,) grades and (N, K) grade scores whose argmax is the judge's
grade (`GradeClassifier.grade_probabilities`); uint8 (N, S, S, 3) images for `degrade`.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor
from torchmetrics.functional.classification import (
    multiclass_accuracy,
    multiclass_cohen_kappa,
    multiclass_recall,
)
from torchvision.transforms.v2 import functional as TF

SETS = ("real", "recon", "synthetic")
RATIOS = {"recon_ratio": "recon", "synthetic_ratio": "synthetic"}  # each over "real"
# what a generator's typical failures do, applied to the real test images
DEGRADATIONS = ("blur_1px", "half_resolution", "noise_8")
NOISE_STD = 8.0  # grey levels of 255: mild sensor noise


def _number(value: Tensor) -> float | None:
    """A float for JSON; None for NaN (QWK of a set whose grades and judge agree on one)."""
    x = float(value)
    return None if math.isnan(x) else round(x, 4)


def judged(grades: Tensor, scores: Tensor) -> dict[str, Any]:
    """The judge on one set: n and recall per grade present, pooled accuracy and QWK."""
    k, grades = scores.shape[1], grades.long()
    if not len(grades):
        return {"n": {}, "recall": {}, "accuracy": None, "qwk": None}
    recall = multiclass_recall(scores, grades, k, average="none")  # (K,); 0 where absent
    present = grades.unique().tolist()  # absent grades omitted: no 0 that means "none"
    return {
        "n": {g: int((grades == g).sum()) for g in present},
        "recall": {g: _number(recall[g]) for g in present},
        "accuracy": _number(multiclass_accuracy(scores, grades, k, average="micro")),
        "qwk": _number(multiclass_cohen_kappa(scores, grades, k, weights="quadratic")),
    }


def _ratio(value: float | None, base: float | None) -> float | None:
    """value / base; None where the judge recalls none of the real images (nothing to keep)."""
    return None if value is None or not base else round(value / base, 4)


def fidelity_table(sets: dict[str, tuple[Tensor, Tensor]]) -> dict[str, Any]:
    """Per grade and pooled figures from (grades, scores) of each of SETS.

    Returns {"grades": {g: {n_<set>, <set> recall, recon_ratio, synthetic_ratio}},
    "pooled": {<set>: {n, accuracy, qwk}}}, grades as strings (JSON keys)."""
    found = {name: judged(*sets[name]) for name in SETS}
    grades = sorted({g for f in found.values() for g in f["n"]})
    table = {}
    for g in grades:
        row: dict[str, Any] = {f"n_{name}": found[name]["n"].get(g, 0) for name in SETS}
        row |= {name: found[name]["recall"].get(g) for name in SETS}
        row |= {ratio: _ratio(row[name], row["real"]) for ratio, name in RATIOS.items()}
        table[str(g)] = row
    pooled = {
        name: {"n": sum(f["n"].values()), "accuracy": f["accuracy"], "qwk": f["qwk"]}
        for name, f in found.items()
    }
    return {"grades": table, "pooled": pooled}


def degrade(images: Tensor, kind: str, seed: int = 0) -> Tensor:
    """uint8 (N, S, S, 3) images, degraded as one of DEGRADATIONS: a Gaussian blur of
    sigma 1 px; down to S / 2 (antialiased) and back up (bilinear); Gaussian noise of
    NOISE_STD grey levels (drawn from `seed`: the same noise every run)."""
    x = images.permute(0, 3, 1, 2).float()  # (N, 3, S, S) in [0, 255]
    if kind == "blur_1px":
        x = TF.gaussian_blur(x, kernel_size=[7, 7], sigma=[1.0, 1.0])
    elif kind == "half_resolution":
        size = list(x.shape[-2:])
        x = TF.resize(TF.resize(x, [s // 2 for s in size], antialias=True), size, antialias=False)
    elif kind == "noise_8":
        noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))
        x = x + NOISE_STD * noise
    else:
        raise ValueError(f"degradation must be one of {DEGRADATIONS}, got {kind!r}")
    return x.round().clamp(0, 255).byte().permute(0, 2, 3, 1)


def judge_limits(grades: Tensor, scores: dict[str, Tensor]) -> dict[str, Any]:
    """Per degradation (its name -> the judge's (N, K) scores on the degraded real images),
    the judge's recall per grade and pooled accuracy: {name: {"recall": {g: r}, "accuracy"}}."""
    found = {name: judged(grades, s) for name, s in scores.items()}
    return {
        name: {"recall": {str(g): r for g, r in f["recall"].items()}, "accuracy": f["accuracy"]}
        for name, f in found.items()
    }
