"""Output heads of the grading CNN: what the network predicts, its loss, and how its outputs
become grade scores and final grades.

- `classification`: 5 logits, softmax; the grade is the argmax.
- `regression`: one score, the grade as a number (smooth L1); the grade is the score cut at
  thresholds fitted on validation images to maximise QWK (the competition standard).
- `ordinal`: 4 logits, P(grade > k) for k = 0..3 (binary cross-entropy per cut, Niu et al.
  2016), cumulated monotone; their sum is the expected grade, cut at thresholds like the
  regressed grade (fitted on validation: a balanced sampler shifts every P(grade > k)).

Every head gives (B, 5) grade scores whose argmax IS the final grade, so metrics, confusion
matrices, per-image predictions, the audit and the confidence filter all read the final grade
the same way. For `classification` they are the softmax probabilities; for the others, half
the mass on the final grade and half spread by the head's own soft distribution: ordered like
the head's score (AUROC stays exact), but not calibrated probabilities.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from drvae.data.records import NUM_GRADES

HEADS = ("classification", "regression", "ordinal")
THRESHOLDED = ("regression", "ordinal")  # heads whose grade is a score cut at thresholds
SOFTNESS = 0.25  # regression: width (in grades) of the soft assignment around thresholds


def head_outputs(head: str, num_classes: int = NUM_GRADES) -> int:
    """How many numbers the network outputs for `head`."""
    sizes = {"classification": num_classes, "regression": 1, "ordinal": num_classes - 1}
    if head not in sizes:
        raise ValueError(f"classifier.model.head: expected one of {HEADS}, got {head!r}")
    return sizes[head]


def exceedances(targets: Tensor) -> Tensor:
    """(B, K) grade distributions -> (B, K - 1) P(grade > k): the ordinal head's targets."""
    return (1 - targets.cumsum(dim=1)[:, :-1]).clamp(0, 1)


def head_loss(head: str, outputs: Tensor, grades: Tensor, weight: Tensor | None) -> Tensor:
    """The regression and ordinal heads' losses; `weight` (K,) weighs each image by its grade."""
    classes = outputs.shape[1] + 1 if head == "ordinal" else NUM_GRADES
    return soft_target_loss(head, outputs, F.one_hot(grades, classes), weight)


def soft_target_loss(head: str, outputs: Tensor, targets: Tensor, weight: Tensor | None) -> Tensor:
    """Any head's loss against (B, K) grade distributions, the blended grades of mixup /
    cutmix: cross-entropy (classification), the blend's mean grade (regression), the blend's
    P(grade > k) (ordinal). One-hot targets give the plain losses; `weight` (K,) weighs each
    image by its targets' blend of the grade weights."""
    targets = targets.float()
    if head == "classification":
        loss = -(targets * outputs.float().log_softmax(dim=1)).sum(dim=1)  # (B,)
    elif head == "regression":
        grade = targets @ torch.arange(targets.shape[1], dtype=targets.dtype, device=targets.device)
        loss = F.smooth_l1_loss(outputs[:, 0].float(), grade, reduction="none")
    else:
        above = exceedances(targets)  # (B, K - 1)
        loss = F.binary_cross_entropy_with_logits(outputs.float(), above, reduction="none").sum(1)
    if weight is None:
        return loss.mean()
    w = targets @ weight.to(targets)  # (B,)
    return (w * loss).sum() / w.sum()


def _mixed(soft: Tensor, grades: Tensor) -> Tensor:
    """Half the mass on the final grade: its argmax is `grades`, its order the soft one's."""
    return 0.5 * F.one_hot(grades, soft.shape[1]).float() + 0.5 * soft


def _ordinal_above(outputs: Tensor) -> Tensor:
    """(B, 4) P(grade > k), made non-increasing in k."""
    return torch.sigmoid(outputs.float()).cummin(dim=1).values


def grade_score(head: str, outputs: Tensor) -> Tensor:
    """(B,) the continuous grade a THRESHOLDED head's thresholds cut: the regressed grade,
    or the ordinal head's expected grade (the sum of its P(grade > k))."""
    if head == "regression":
        return outputs[:, 0].float()
    if head == "ordinal":
        return _ordinal_above(outputs).sum(dim=1)
    raise ValueError(f"head {head!r} has no thresholded score (heads: {THRESHOLDED})")


def grade_scores(head: str, outputs: Tensor, thresholds: Tensor) -> tuple[Tensor, Tensor]:
    """(B, 5) grade scores (argmax = final grade) and (B,) final grades."""
    outputs = outputs.float()
    if head == "classification":
        probs = outputs.softmax(dim=1)
        return probs, probs.argmax(dim=1)
    score = grade_score(head, outputs)[:, None]  # (B, 1)
    grades = (score > thresholds.to(score)).sum(dim=1)
    if head == "regression":
        above = torch.sigmoid((score - thresholds.to(score)) / SOFTNESS)  # (B, 4): P(> cut k)
    else:
        above = _ordinal_above(outputs)
    ones = torch.ones_like(above[:, :1])
    cumulative = torch.cat([ones, above, 0 * ones], dim=1)  # (B, 6): P(> k - 1)
    soft = (cumulative[:, :-1] - cumulative[:, 1:]).clamp_min(0)  # (B, 5)
    return _mixed(soft, grades), grades
