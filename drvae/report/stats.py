"""Across-seed summaries and paired differences to the baseline, with a bootstrap over the
test images.

The confidence interval of a difference resamples the TEST IMAGES, the same indices for a
setting and its baseline (the runs of a sweep grade the same images in the same order), and
recomputes every seed's metric from its `test_predictions.csv`; the difference per replicate
is the mean over the seeds both settings ran. Metrics come from per-replicate confusion
counts (one `np.bincount` over all replicates), so 1000 replicates of 18 runs take seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from numbers import Real
from typing import Any

import numpy as np

from drvae.data.records import NUM_GRADES, DataError
from drvae.metrics.grading import REFERABLE_GRADE
from drvae.report.collect import Job, natural
from drvae.run_folder import read_predictions

RECALLS = tuple(f"test/recall_grade{g}" for g in range(NUM_GRADES))
BOOTSTRAPPED = (
    "test/qwk",
    "test/macro_f1",
    "test/balanced_accuracy",
    "test/accuracy",
    "test/referable_sensitivity",
    "test/referable_specificity",
    *RECALLS,
)
RNG_SEED = 0  # the same replicates on every rerun of the report


def mean_std(values: list[float]) -> tuple[int, float, float]:
    """(n, mean, sample std); the std is NaN for a single seed (nothing to spread)."""
    if not values:
        return 0, float("nan"), float("nan")
    std = float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")
    return len(values), float(np.mean(values)), std


def setting_values(jobs: list[Job], metric: str) -> list[float]:
    return [v for v in (j.metric(metric) for j in jobs) if v is not None]


def adds_nothing(job: Job) -> bool:
    """Whether the job's rebalancing leaves the training set as it is: methods [none], or
    [synthetic] adding 0 per grade (the 0 of a count ablation)."""
    methods = job.rebalance.get("methods")
    if methods is None:  # results without a config: unknown, never a baseline
        return False
    if list(methods) in ([], ["none"]):
        return True
    return list(methods) == ["synthetic"] and _is_zero(job.rebalance.get("per_grade"))


def _is_zero(per_grade: Any) -> bool:
    if isinstance(per_grade, dict):
        return all(_is_zero(v) for v in per_grade.values())
    if isinstance(per_grade, str):
        return per_grade.strip() in ("0", "0.0")
    return isinstance(per_grade, Real) and not isinstance(per_grade, bool) and per_grade == 0


def find_baseline(groups: dict[str, list[Job]]) -> tuple[str | None, str]:
    """The one setting that adds nothing, and a sentence saying which (or why none)."""
    found = [label for label, jobs in groups.items() if all(adds_nothing(j) for j in jobs)]
    if len(found) == 1:
        return found[0], f"baseline: {found[0]} (its rebalancing adds nothing)"
    if found:
        return None, "no baseline column: several settings add nothing (" + "; ".join(found) + ")"
    return None, (
        "no baseline column: no setting adds nothing "
        "(rebalance.methods=[none], or [synthetic] with per_grade 0)"
    )


def confusion_counts(
    grades: np.ndarray, predicted: np.ndarray, index: np.ndarray, k: int
) -> np.ndarray:
    """(B, K, K) confusion counts (rows: true grade) of the B resamples `index` (B, N)."""
    b = len(index)
    codes = grades[index] * k + predicted[index] + (np.arange(b) * k * k)[:, None]
    return np.bincount(codes.ravel(), minlength=b * k * k).reshape(b, k, k)


def confusion_metrics(counts: np.ndarray) -> dict[str, np.ndarray]:
    """Each metric per confusion matrix, (B, K, K) -> (B,), as scikit-learn and the
    classifier's torchmetrics define them: balanced accuracy and macro-F1 over the grades
    present; a grade absent from a resample has recall NaN."""
    c = counts.astype(float)
    n, tp = c.sum(axis=(1, 2)), np.diagonal(c, axis1=1, axis2=2)
    true, predicted = c.sum(axis=2), c.sum(axis=1)  # (B, K)
    grades = np.arange(c.shape[1])
    weights = (grades[:, None] - grades[None, :]) ** 2.0
    r = REFERABLE_GRADE
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = tp / true
        f1 = np.where(true + predicted > 0, 2 * tp / (true + predicted), np.nan)
        expected = np.einsum("bi,bj,ij->b", true, predicted, weights) / n
        values = {
            "test/qwk": 1 - np.einsum("bij,ij->b", c, weights) / expected,
            "test/macro_f1": np.nanmean(f1, axis=1),
            "test/balanced_accuracy": np.nanmean(recall, axis=1),
            "test/accuracy": tp.sum(axis=1) / n,
            "test/referable_sensitivity": c[:, r:, r:].sum((1, 2)) / c[:, r:].sum((1, 2)),
            "test/referable_specificity": c[:, :r, :r].sum((1, 2)) / c[:, :r].sum((1, 2)),
        }
    return values | {f"test/recall_grade{g}": recall[:, g] for g in grades}


@dataclass
class Delta:
    """Setting minus baseline, mean over shared seeds; its 95% CI (None: not available)."""

    delta: float | None
    low: float | None = None
    high: float | None = None

    @property
    def excludes_zero(self) -> bool:
        return self.low is not None and self.high is not None and (self.low > 0 or self.high < 0)


@dataclass
class Bootstrap:
    """Paired percentile bootstrap over the test images: `replicates` resamples drawn once
    (fixed seed) and shared by every run, and each run's metrics on them, computed once."""

    replicates: int = 1000
    seed: int = RNG_SEED
    _index: dict[int, np.ndarray] = field(default_factory=dict)
    _runs: dict[Any, tuple[list[str], dict[str, np.ndarray]]] = field(default_factory=dict)

    def index(self, n: int) -> np.ndarray:
        if n not in self._index:
            rng = np.random.default_rng(self.seed)
            self._index[n] = rng.integers(0, n, size=(self.replicates, n))
        return self._index[n]

    def run(self, job: Job) -> tuple[list[str], dict[str, np.ndarray]]:
        """(test image ids, metric -> (B,) values on the resamples) of one job."""
        key = (job.folder, job.test_set)
        if key not in self._runs:
            ids, grades, probs = read_predictions(job.predictions)
            counts = confusion_counts(grades, probs.argmax(1), self.index(len(ids)), probs.shape[1])
            self._runs[key] = ids, confusion_metrics(counts)
        return self._runs[key]

    def interval(
        self, pairs: list[tuple[Job, Job]], metric: str
    ) -> tuple[float | None, float | None]:
        """95% percentile interval of the mean over pairs (setting, baseline) of the paired
        difference, on the same resampled images."""
        diffs = [self.run(job)[1][metric] - self.run(base)[1][metric] for job, base in pairs]
        mean = np.mean(diffs, axis=0)  # (B,); NaN where a grade is absent from a resample
        if np.isnan(mean).all():
            return None, None
        low, high = np.nanpercentile(mean, [2.5, 97.5])
        return float(low), float(high)

    def unavailable(self, pairs: list[tuple[Job, Job]]) -> str | None:
        """Why there is no interval for these pairs (None when there is one)."""
        missing = {j.folder.name for pair in pairs for j in pair if j.predictions is None}
        if missing:
            name = pairs[0][0].predictions_name
            return f"no {name} in job " + ", ".join(sorted(missing, key=natural))
        try:
            differ = any(self.run(job)[0] != self.run(base)[0] for job, base in pairs)
        except DataError as error:
            return str(error)
        return "its test images differ from the baseline's" if differ else None


def paired(jobs: list[Job], baseline: list[Job]) -> list[tuple[Job, Job]]:
    """(setting's job, baseline's job) of each seed both ran, by seed."""
    by_seed = {j.seed: j for j in baseline if j.seed is not None}
    return [(j, by_seed[j.seed]) for j in jobs if j.seed in by_seed]


def deltas(
    jobs: list[Job], baseline: list[Job], boot: Bootstrap, metrics: tuple[str, ...]
) -> tuple[dict[str, Delta], str | None]:
    """Metric -> Delta of one setting against the baseline, and why the CIs are missing
    (None when they are there)."""
    pairs = paired(jobs, baseline)
    if not pairs:
        return {m: Delta(None) for m in metrics}, "no seed shared with the baseline"
    why = boot.unavailable(pairs)
    out = {}
    for metric in metrics:
        diffs = [(j.metric(metric), b.metric(metric)) for j, b in pairs]
        diffs = [s - b for s, b in diffs if s is not None and b is not None]
        ci = boot.interval(pairs, metric) if why is None and metric in BOOTSTRAPPED else (None,) * 2
        out[metric] = Delta(float(np.mean(diffs)) if diffs else None, *ci)
    return out, why
