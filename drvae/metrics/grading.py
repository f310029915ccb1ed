"""DR grading metrics as torchmetrics collections, fed with (probabilities (B, 5), grades (B,)).

Referable DR is grade >= 2 (moderate or worse, the usual screening referral threshold): its
sensitivity and specificity score the decision "predicted grade >= 2", and its AUROC the
probability mass on grades 2-4. `referable_sensitivity_at_spec80` reads the same ROC curve at
the operating point screening asks for (specificity >= 0.80): a property of the ranking, with
the threshold chosen on the scored images themselves, not a decision the grader made.
"""

from __future__ import annotations

import torch
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    BinaryAUROC,
    BinaryRecall,
    BinarySensitivityAtSpecificity,
    BinarySpecificity,
    MulticlassAccuracy,
    MulticlassAUROC,
    MulticlassCohenKappa,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
)
from torchmetrics.utilities import dim_zero_cat
from torchmetrics.wrappers import ClasswiseWrapper, LambdaInputTransformer

from drvae.data.records import NUM_GRADES

REFERABLE_GRADE = 2
SCREENING_SPECIFICITY = 0.8  # the specificity a DR screening programme asks of a grader
GRADE_LABELS = [f"grade{g}" for g in range(NUM_GRADES)]


class BalancedAccuracy(MulticlassRecall):
    """Mean recall over the grades present in the targets (scikit-learn's balanced accuracy):
    torchmetrics' macro recall would count a grade absent from a small split as recall 0."""

    def __init__(self, num_classes: int) -> None:
        super().__init__(num_classes, average=None)

    def compute(self) -> torch.Tensor:
        tp, _, _, fn = self._final_state()
        present = (tp + fn) > 0
        return (tp[present] / (tp + fn)[present]).float().mean()


class MacroAUROC(MulticlassAUROC):
    """One-vs-rest AUROC averaged over the grades present in the targets (undefined for an
    absent grade, which torchmetrics' macro average would count as 0)."""

    def __init__(self, num_classes: int) -> None:
        super().__init__(num_classes, average=None)

    def compute(self) -> torch.Tensor:
        per_grade = super().compute()  # (K,)
        target = dim_zero_cat(self.target)
        present = torch.bincount(target.long(), minlength=self.num_classes) > 0
        return per_grade[present].mean()


class SensitivityAtSpecificity(BinarySensitivityAtSpecificity):
    """The best sensitivity at any threshold whose specificity is >= `min_specificity`
    (torchmetrics returns it with that threshold; the metric is the sensitivity alone)."""

    def compute(self) -> torch.Tensor:
        return super().compute()[0]


def referable_decision(probs: torch.Tensor) -> torch.Tensor:
    return (probs.argmax(dim=1) >= REFERABLE_GRADE).long()  # (B,)


def referable_probability(probs: torch.Tensor) -> torch.Tensor:
    return probs[:, REFERABLE_GRADE:].sum(dim=1)  # (B,)


def referable_target(target: torch.Tensor) -> torch.Tensor:
    return (target >= REFERABLE_GRADE).long()  # (B,)


def _referable(metric: torch.nn.Module, score: bool = False) -> LambdaInputTransformer:
    pred = referable_probability if score else referable_decision
    return LambdaInputTransformer(metric, transform_pred=pred, transform_target=referable_target)


def grading_metrics(prefix: str, num_classes: int = NUM_GRADES) -> MetricCollection:
    """Every grading metric, keyed `<prefix>qwk`, `<prefix>recall_grade3`, ..."""
    k = num_classes
    return MetricCollection(
        {
            "qwk": MulticlassCohenKappa(k, weights="quadratic"),
            "macro_f1": MulticlassF1Score(k, average="macro"),
            "balanced_accuracy": BalancedAccuracy(k),
            "accuracy": MulticlassAccuracy(k, average="micro"),
            "auroc": MacroAUROC(k),
            "recall": ClasswiseWrapper(MulticlassRecall(k, average=None), GRADE_LABELS, "recall_"),
            "precision": ClasswiseWrapper(
                MulticlassPrecision(k, average=None), GRADE_LABELS, "precision_"
            ),
            "referable_sensitivity": _referable(BinaryRecall()),
            "referable_specificity": _referable(BinarySpecificity()),
            "referable_auroc": _referable(BinaryAUROC(), score=True),
            "referable_sensitivity_at_spec80": _referable(
                SensitivityAtSpecificity(SCREENING_SPECIFICITY), score=True
            ),
        },
        prefix=prefix,
        compute_groups=False,  # groups misfire with ClasswiseWrapper ("compute before update")
    )


def confusion_matrix(num_classes: int = NUM_GRADES) -> MulticlassConfusionMatrix:
    """Rows: true grade; columns: predicted grade; counts."""
    return MulticlassConfusionMatrix(num_classes)
