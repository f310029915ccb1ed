"""Grading a patient's two eyes together, the last step of the EyePACS 2015 solutions: both
eyes of a patient usually carry the same or a neighbouring grade (on eyepacs128 the two eyes'
true grades agree with QWK 0.84), so each eye's head outputs are blended with its fellow
eye's, (1 - w) own + w fellow's, where the fellow eye is in the same split. The weight w is
chosen on the validation images (with the grade thresholds, for the thresholded heads) to
maximise QWK, from `WEIGHTS`: 0 (each eye alone) is always a candidate."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from drvae.metrics.thresholds import fit_thresholds, qwk, to_grades
from drvae.models.grading_heads import THRESHOLDED, grade_score

WEIGHTS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)  # above 0.5 the fellow eye would count more


def with_fellow(outputs: Tensor, fellow: Tensor, weight: float) -> Tensor:
    """(N, K) outputs, each row blended with its fellow eye's row (`fellow` (N,): its
    position, -1 where absent) as (1 - weight) own + weight fellow's."""
    paired = fellow >= 0
    blended = outputs.clone()
    blended[paired] = (1 - weight) * outputs[paired] + weight * outputs[fellow[paired]]
    return blended


def fit_fellow_weight(
    head: str, outputs: Tensor, grades: Tensor, fellow: Tensor, thresholds: Tensor | None
) -> tuple[float, Tensor | None]:
    """The weight in `WEIGHTS` whose blend grades `grades` with the highest QWK, and for a
    thresholded head the thresholds it was scored with: refitted for each weight when
    `thresholds` is None, else those given."""
    truth = grades.cpu().numpy()
    best: tuple[float, float, Tensor | None] = (-np.inf, 0.0, thresholds)
    for weight in WEIGHTS:
        blended = with_fellow(outputs, fellow, weight)
        cuts = thresholds
        if head in THRESHOLDED:
            score = grade_score(head, blended).cpu().numpy()
            if cuts is None:
                cuts = torch.tensor(fit_thresholds(score, truth))
            predicted = to_grades(score, cuts.numpy())
        else:
            predicted = blended.argmax(dim=1).cpu().numpy()
        kappa = qwk(truth, predicted)
        if kappa > best[0] + 1e-12:  # ties: the smaller weight
            best = (kappa, weight, cuts)
    return best[1], best[2]
