"""Rebalancing of the TRAIN split: how many images each grade gains, and from where.

Per-grade targets follow imbalanced-learn's `sampling_strategy` vocabulary, plus the
paper's "N more of every grade":

    per_grade: 100            count_as=added: 100 more images of EVERY grade (the paper)
    per_grade: {3: 200, 4: 300}  count_as=added: that many more of those grades
    per_grade: 500            count_as=total: every grade up to 500 images (none removed)
    per_grade: {3: 500}       count_as=total: grade 3 up to 500 images
    per_grade: not majority   imbalanced-learn: every grade but the largest up to its size
                              (also: all, minority, not minority, auto)
    per_grade: 0.5            every grade up to half the largest grade's size

The added images come from the VAE (`synthetic`) or are random duplicates of real training
images (`oversample`); `class_weight` weighs the loss by inverse grade frequency of the final
training set. Validation and test images are never touched.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from imblearn.utils import check_sampling_strategy
from sklearn.utils.class_weight import compute_class_weight

from drvae.data.records import NUM_GRADES
from drvae.errors import ConfigError

METHODS = ("none", "oversample", "class_weight", "synthetic")
IMBLEARN_STRATEGIES = ("not majority", "all", "minority", "not minority", "auto")
COUNT_AS = ("added", "total")
GRADES = range(NUM_GRADES)


def checked_methods(methods: str | Sequence[str], key: str = "rebalance.methods") -> tuple:
    """The rebalancing methods, validated: `none`, or a combination of the others."""
    names = (methods,) if isinstance(methods, str) else tuple(str(m) for m in methods)
    unknown = [m for m in names if m not in METHODS]
    if unknown or not names:
        raise ConfigError(f"{key}: unknown or empty {unknown or names}; expected some of {METHODS}")
    if "none" in names and len(names) > 1:
        raise ConfigError(f"{key}: `none` cannot be combined with {names}")
    if {"oversample", "synthetic"} <= set(names):
        raise ConfigError(f"{key}: choose one source of added images: oversample or synthetic")
    return tuple(m for m in METHODS if m in names and m != "none")


def _grade(value: Any, key: str) -> int:
    """A grade key: an int, or its decimal string (YAML and JSON keys)."""
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{key}: grade {value!r} is not an integer 0-4")
    grade = value
    if grade not in GRADES:
        raise ConfigError(f"{key}: grade {grade} is outside 0-{NUM_GRADES - 1}")
    return grade


def _count(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{key}: expected a count >= 0, got {value!r}")
    return value


def _as_mapping(per_grade: Any, key: str) -> dict[int, int]:
    """An int (every grade) or a mapping grade -> count, as {grade: count}."""
    if isinstance(per_grade, Mapping):
        return {_grade(g, key): _count(n, f"{key}.{g}") for g, n in per_grade.items()}
    return dict.fromkeys(GRADES, _count(per_grade, key))


def added_per_grade(
    per_grade: Any, real: Mapping[int, int], count_as: str = "added", key: str = "rebalance"
) -> dict[int, int]:
    """How many images each grade gains, given the real training counts `real`."""
    where = f"{key}.per_grade"
    if count_as not in COUNT_AS:
        raise ConfigError(f"{key}.count_as: expected one of {COUNT_AS}, got {count_as!r}")
    if isinstance(per_grade, str):
        if per_grade not in IMBLEARN_STRATEGIES:
            raise ConfigError(
                f"{where}: unknown strategy {per_grade!r}; expected an int, a mapping "
                f"grade -> count, a ratio in (0, 1], or one of {IMBLEARN_STRATEGIES}"
            )
        y = np.repeat(list(GRADES), [real[g] for g in GRADES])
        added = check_sampling_strategy(per_grade, y, "over-sampling")
        return {g: int(added.get(g, 0)) for g in GRADES}
    if isinstance(per_grade, float):
        if not 0 < per_grade <= 1:
            raise ConfigError(f"{where}: a ratio to the largest grade must be in (0, 1]")
        target = math.ceil(per_grade * max(real.values()))
        return {g: max(0, target - real[g]) if real[g] else 0 for g in GRADES}
    counts = _as_mapping(per_grade, where)
    if count_as == "added":
        return {g: counts.get(g, 0) for g in GRADES}
    below = {g: (c, real[g]) for g, c in counts.items() if c < real[g]}
    if below and isinstance(per_grade, Mapping):
        raise ConfigError(
            f"{where}: totals (asked, real) {below} are below the real training counts; "
            "rebalancing adds images, it never removes them"
        )
    return {g: max(0, counts.get(g, 0) - real[g]) for g in GRADES}


def balanced_weights(counts: Mapping[int, int]) -> list[float]:
    """Loss weight per grade, n / (k * count) over the grades present (scikit-learn's
    "balanced"); a grade with no image keeps weight 1 (it never occurs in training)."""
    present = np.array([g for g in GRADES if counts[g]])
    y = np.repeat(present, [counts[g] for g in present])
    balanced = compute_class_weight("balanced", classes=present, y=y)
    weights = dict(zip(present.tolist(), balanced, strict=True))
    return [round(float(weights.get(g, 1.0)), 6) for g in GRADES]


@dataclass(frozen=True)
class RebalancePlan:
    """What the training split becomes: real images plus, per grade, the added ones."""

    methods: tuple[str, ...]
    real: dict[int, int]
    synthetic: dict[int, int]
    oversampled: dict[int, int]
    class_weights: list[float] | None

    @classmethod
    def make(
        cls, methods: Sequence[str], per_grade: Any, count_as: str, real: Mapping[int, int]
    ) -> RebalancePlan:
        methods = checked_methods(methods)
        real = {g: int(real.get(g, 0)) for g in GRADES}
        none = dict.fromkeys(GRADES, 0)
        adds = "synthetic" in methods or "oversample" in methods
        added = added_per_grade(per_grade, real, count_as) if adds else none
        empty = [g for g in GRADES if added[g] and not real[g]]
        if empty:
            raise ConfigError(
                f"rebalance.per_grade: asks for images of grade(s) {empty}, which have no "
                "training images to learn from or duplicate"
            )
        synthetic = added if "synthetic" in methods else none
        oversampled = added if "oversample" in methods else none
        total = {g: real[g] + added[g] for g in GRADES}
        weights = balanced_weights(total) if "class_weight" in methods else None
        return cls(methods, real, synthetic, oversampled, weights)

    @classmethod
    def synthetic_only(cls, counts: Mapping[int, int]) -> RebalancePlan:
        """Training on synthetic images alone (the audit's train-synthetic/test-real)."""
        none = dict.fromkeys(GRADES, 0)
        return cls(("synthetic",), none, {g: int(counts.get(g, 0)) for g in GRADES}, none, None)

    def key_material(self) -> dict[str, Any]:
        """What determines the training set, for stage keys: a plan that adds nothing and
        weighs nothing (synthetic with per_grade 0) trains exactly what `none` trains."""
        plan = asdict(self)
        if not any(self.synthetic.values()) and not any(self.oversampled.values()):
            plan["methods"] = () if self.class_weights is None else ("class_weight",)
        return plan

    @property
    def total(self) -> dict[int, int]:
        return {g: self.real[g] + self.synthetic[g] + self.oversampled[g] for g in GRADES}

    def counts(self) -> dict[str, dict[int, int]]:
        return {
            "train_real": self.real,
            "train_synthetic": self.synthetic,
            "train_oversampled": self.oversampled,
        }

    def table(self) -> str:
        """Per-grade counts before and after rebalancing, as printed at the start of training."""
        rows = [("real", self.real), ("+ synthetic", self.synthetic)]
        rows += [("+ oversampled", self.oversampled), ("= train", self.total)]
        lines = [f"{'grade':<14}" + "".join(f"{g:>8}" for g in GRADES) + f"{'all':>9}"]
        for name, counts in rows:
            values = "".join(f"{counts[g]:>8}" for g in GRADES)
            lines.append(f"{name:<14}{values}{sum(counts.values()):>9}")
        if self.class_weights:
            lines.append(f"{'loss weight':<14}" + "".join(f"{w:>8.3f}" for w in self.class_weights))
        n_syn, n_all = sum(self.synthetic.values()), sum(self.total.values())
        share = f"{n_syn} of {n_all} training images are synthetic ({n_syn / max(n_all, 1):.1%})"
        return f"rebalance {'+'.join(self.methods) or 'none'}:\n" + "\n".join(lines) + f"\n{share}"


def oversample_indices(
    indices: np.ndarray, grades: np.ndarray, added: Mapping[int, int], seed: int
) -> np.ndarray:
    """`added[g]` random duplicates (drawn with replacement, as imbalanced-learn's
    RandomOverSampler does) of the grade-g members of `indices`."""
    rng = np.random.default_rng(seed)
    extra = [rng.choice(indices[grades == g], n) for g, n in sorted(added.items()) if n]
    return np.concatenate(extra) if extra else np.empty(0, dtype=np.int64)
