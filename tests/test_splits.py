"""Splits: stratified by grade, grouped by patient, deterministic, official splits honoured."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from drvae.data.duplicates import group_labels
from drvae.data.records import DataError, Record
from drvae.data.splits import make_splits


def make_records(n_patients: int = 400, split: str | None = None, seed: int = 0) -> list[Record]:
    """Two eyes per patient, EyePACS-like imbalance; the eyes may differ in grade."""
    rng = np.random.default_rng(seed)
    grades = rng.choice(5, size=2 * n_patients, p=[0.6, 0.1, 0.15, 0.08, 0.07])
    return [
        Record(
            f"{p}_{eye}",
            Path(f"{p}_{eye}.jpeg"),
            int(grades[2 * p + e]),
            str(p),
            "test",
            f"labels.csv:{2 * p + e + 2}",
            eye=eye,
            split=split,
        )
        for p in range(n_patients)
        for e, eye in enumerate(("left", "right"))
    ]


def test_patients_never_cross_splits_and_every_image_is_used() -> None:
    records = make_records()
    splits = make_splits(records, seed=3)
    sides = [{records[i].patient for i in part} for part in (splits.train, splits.val, splits.test)]
    assert not (sides[0] & sides[1]) and not (sides[0] & sides[2]) and not (sides[1] & sides[2])
    everything = np.concatenate([splits.train, splits.val, splits.test])
    assert sorted(everything.tolist()) == list(range(len(records)))


def test_split_sizes_and_grade_proportions_follow_the_fractions() -> None:
    records = make_records(1000)
    splits = make_splits(records, val_fraction=0.15, test_fraction=0.15, seed=0)
    n = len(records)
    assert abs(len(splits.test) / n - 1 / 7) < 0.02  # 0.15 -> 1 fold of 7
    assert abs(len(splits.val) / n - 0.15) < 0.03
    grades = np.array([r.grade for r in records])
    overall = np.bincount(grades, minlength=5) / n
    for part in (splits.train, splits.val, splits.test):
        share = np.bincount(grades[part], minlength=5) / len(part)
        assert np.abs(share - overall).max() < 0.03


def test_same_seed_same_split_and_other_seed_another() -> None:
    records = make_records()
    a, b, c = (make_splits(records, seed=s) for s in (1, 1, 2))
    assert np.array_equal(a.test, b.test) and np.array_equal(a.val, b.val)
    assert not np.array_equal(a.test, c.test)


def test_official_split_is_honoured() -> None:
    records = make_records(50, split="train")[:60] + make_records(50, split="val")[60:80]
    records += make_records(50, split="test")[80:]
    splits = make_splits(records, seed=0)
    assert {records[i].split for i in splits.train} == {"train"}
    assert {records[i].split for i in splits.val} == {"val"}
    assert {records[i].split for i in splits.test} == {"test"}


def test_validation_is_carved_from_official_train_when_the_dataset_has_none() -> None:
    train = [r for r in make_records(300, split="train") if int(r.patient) < 240]
    test = [r for r in make_records(300, split="test") if int(r.patient) >= 240]
    records = train + test
    splits = make_splits(records, seed=0)
    assert {records[i].split for i in splits.test} == {"test"}
    assert len(splits.test) == len(test)
    assert {records[i].split for i in splits.val} == {"train"} and len(splits.val) > 0


def test_k_fold_rotates_validation_over_a_fixed_test_split() -> None:
    records = make_records(300)
    folds = [make_splits(records, seed=0, n_folds=4, fold=k) for k in range(4)]
    assert all(np.array_equal(f.test, folds[0].test) for f in folds)
    vals = np.concatenate([f.val for f in folds])
    rest = np.setdiff1d(np.arange(len(records)), folds[0].test)
    assert sorted(vals.tolist()) == rest.tolist()  # each non-test image validates exactly once


def test_some_rows_with_an_official_split_and_some_without_is_an_error() -> None:
    records = make_records(20, split="train")[:10] + make_records(20)[10:]
    with pytest.raises(DataError, match=r"labels.csv:\d+: no official split"):
        make_splits(records)


def test_bad_fractions_and_folds_are_refused() -> None:
    records = make_records(20)
    with pytest.raises(DataError, match="val_fraction"):
        make_splits(records, val_fraction=1.5)
    with pytest.raises(DataError, match="fold must be"):
        make_splits(records, n_folds=3, fold=3)
    with pytest.raises(DataError, match="patients cannot be split"):
        make_splits(make_records(2), test_fraction=0.1)


# --- duplicate groups -------------------------------------------------------------------


def _chains(n_groups: int, size: int, stride: int) -> list[list[int]]:
    """Duplicate groups linking images of `size` different patients each."""
    return [[g + k * stride for k in range(size)] for g in range(n_groups)]


def _sides(splits) -> dict[int, str]:
    return {int(i): name for name in ("train", "val", "test") for i in getattr(splits, name)}


def test_duplicate_groups_never_cross_splits() -> None:
    records = make_records(400)
    groups = _chains(60, 4, 97)  # each links 4 distant patients' images
    splits = make_splits(records, seed=0)
    sides = _sides(splits)
    assert any(len({sides[i] for i in g}) > 1 for g in groups)  # by patient alone they cross
    grouped = make_splits(records, seed=0, groups=group_labels(groups, records))
    sides = _sides(grouped)
    assert all(len({sides[i] for i in g}) == 1 for g in groups)
    assert len(sides) == len(records)  # every image still used
    assert (
        len(
            {records[i].patient for i in grouped.test} & {records[i].patient for i in grouped.train}
        )
        == 0
    )


def test_without_duplicates_the_groups_are_the_patients() -> None:
    records = make_records(200)
    labels = group_labels([], records)
    assert labels == [r.patient for r in records]
    a, b = make_splits(records, seed=0), make_splits(records, seed=0, groups=labels)
    assert np.array_equal(a.test, b.test) and np.array_equal(a.val, b.val)


def test_an_official_split_dividing_a_group_puts_it_on_the_held_out_side() -> None:
    records = make_records(50, split="train")[:60] + make_records(50, split="val")[60:80]
    records += make_records(50, split="test")[80:]
    groups = [[0, 90], [10, 70]]  # train + test copies, train + val copies
    splits = make_splits(records, seed=0, groups=group_labels(groups, records))
    sides = _sides(splits)
    assert sides[0] == sides[90] == sides[1] == "test"  # image 1: image 0's patient's other eye
    assert sides[10] == sides[70] == "val"
    assert {records[i].split for i in splits.test} == {"train", "test"}
