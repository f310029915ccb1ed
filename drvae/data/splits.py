"""Train / val / test splits: stratified by grade, grouped by patient, deterministic by seed.

A dataset's official split is honoured; when it has no validation part (IDRiD), one is
carved out of its training part. k-fold cross-validation holds the test split fixed and
rotates validation over the rest.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from drvae.data.records import NUM_GRADES, SPLITS, DataError, Record


@dataclass(frozen=True)
class Splits:
    """Indices into the record list, one sorted array per split."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray

    def per_grade(self, records: Sequence[Record]) -> dict[str, dict[int, int]]:
        out = {}
        for name in SPLITS:
            counts = Counter(records[i].grade for i in getattr(self, name))
            out[name] = {g: counts.get(g, 0) for g in range(NUM_GRADES)}
        return out


def _holdout(
    index: np.ndarray,
    records: Sequence[Record],
    groups: np.ndarray,
    fraction: float,
    seed: int,
    fold: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Split `index` into (rest, held out): fold `fold` of round(1 / fraction) grouped,
    stratified folds. The held-out share is therefore 1/k, the nearest such to `fraction`."""
    n_folds = max(2, round(1 / fraction))
    grades = np.array([records[i].grade for i in index])
    patients = groups[index]
    if len(np.unique(patients)) < n_folds:
        raise DataError(
            f"{len(np.unique(patients))} patients cannot be split into {n_folds} "
            f"patient-grouped folds (fraction {fraction}; a patient's duplicate images count "
            "as that patient); add images or lower it"
        )
    folds = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    rest, held = list(folds.split(index, grades, patients))[fold]
    return np.sort(index[rest]), np.sort(index[held])


def _official(records: Sequence[Record], groups: np.ndarray) -> dict[str, np.ndarray] | None:
    """The dataset's own split, if every record has one (None if none has). A group (patient
    or duplicates) that the official split divides goes wholly to its most held-out side
    (test, then val): training never sees a copy of an image it is scored on."""
    labels = [r.split for r in records]
    if all(s is None for s in labels):
        return None
    missing = [r.origin for r in records if r.split not in SPLITS]
    if missing:
        raise DataError(
            f"{missing[0]}: no official split (or not one of {SPLITS}) while other "
            f"rows have one; give every row a split or none"
        )
    side = np.array([SPLITS.index(s) for s in labels])  # 0 train, 1 val, 2 test
    held_out = {g: side[groups == g].max() for g in np.unique(groups)}
    side = np.array([held_out[g] for g in groups])
    return {name: np.flatnonzero(side == k) for k, name in enumerate(SPLITS)}


def _check_groups(splits: Splits, labels: Sequence[str], what: str) -> None:
    sides = [{labels[i] for i in getattr(splits, name)} for name in SPLITS]
    shared = (sides[0] & sides[1]) | (sides[0] & sides[2]) | (sides[1] & sides[2])
    if shared:
        raise DataError(f"{what} {sorted(shared)[:5]} appear in more than one split")


def make_splits(
    records: Sequence[Record],
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    seed: int = 0,
    use_official: bool = True,
    n_folds: int | None = None,
    fold: int = 0,
    groups: Sequence[str] | None = None,
) -> Splits:
    """Split the records. With `n_folds`, validation is fold `fold` of `n_folds` over what
    the test split leaves; otherwise a `val_fraction` share of it. `groups` (one label per
    record; by default its patient) are kept whole on one side: patients merged with their
    duplicate images (`drvae.data.duplicates.group_labels`)."""
    if not 0 < val_fraction < 1 or not 0 < test_fraction < 1:
        raise DataError(
            f"val_fraction and test_fraction must be in (0, 1), got "
            f"{val_fraction} and {test_fraction}"
        )
    if n_folds is not None and not 0 <= fold < n_folds:
        raise DataError(f"fold must be in 0..{n_folds - 1}, got {fold}")
    everything = np.arange(len(records))
    labels = np.array([r.patient for r in records] if groups is None else list(groups))
    official = _official(records, labels) if use_official else None
    if official is not None and len(official["test"]):
        rest, test = np.concatenate([official["train"], official["val"]]), official["test"]
    else:
        rest, test = _holdout(everything, records, labels, test_fraction, seed)
    if n_folds is not None:
        train, val = _holdout(rest, records, labels, 1 / n_folds, seed, fold)
    elif official is not None and len(official["val"]):
        train, val = official["train"], official["val"]
    else:
        train, val = _holdout(rest, records, labels, val_fraction / (1 - test_fraction), seed)
    splits = Splits(np.sort(train), np.sort(val), np.sort(test))
    _check_groups(splits, [r.patient for r in records], "patient(s)")
    _check_groups(splits, labels, "group(s)")
    return splits


def at_most_per_grade(indices: np.ndarray, grades: np.ndarray, n: int, seed: int) -> np.ndarray:
    """At most `n` of `indices` per grade (`grades[i]` is index i's grade), chosen at random
    with `seed`, in ascending order: the paper trains its VAE on 100 images per grade."""
    if n < 1:
        raise ValueError(f"at most {n} images per grade: expected a positive count")
    order = np.random.default_rng(seed).permutation(len(indices))
    kept = np.zeros(len(indices), dtype=bool)
    for grade in np.unique(grades):
        kept[order[grades[order] == grade][:n]] = True
    return indices[kept]
