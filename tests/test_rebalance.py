"""Rebalancing of the TRAIN split: the per-grade vocabulary, the plan, oversampled indices,
and the DataModule that serves it (synthetic and duplicated images reach training only)."""

from __future__ import annotations

from dataclasses import asdict

import albumentations as A
import numpy as np
import pytest
import torch
from conftest import GRADES, real_counts, synthetic_set  # tests/ is on sys.path
from imblearn.utils import check_sampling_strategy
from sklearn.utils.class_weight import compute_class_weight
from torch.utils.data import ConcatDataset

from drvae.data.dataset import FundusDataModule, ImageArray
from drvae.data.rebalance import (
    IMBLEARN_STRATEGIES,
    RebalancePlan,
    added_per_grade,
    checked_methods,
    oversample_indices,
)
from drvae.errors import ConfigError

pytestmark = pytest.mark.usefixtures("torch_one_thread")

REAL = {0: 50, 1: 7, 2: 20, 3: 4, 4: 9}  # imbalanced, like every DR dataset
ZERO = dict.fromkeys(GRADES, 0)


def labels(real: dict[int, int]) -> np.ndarray:
    return np.repeat(list(GRADES), [real[g] for g in GRADES])


# ------------------------------------------------------------------ added_per_grade


def test_an_int_adds_that_many_to_every_grade_as_in_the_paper() -> None:
    assert added_per_grade(100, REAL) == dict.fromkeys(GRADES, 100)
    assert added_per_grade(0, REAL) == ZERO


def test_a_mapping_adds_to_the_named_grades_only() -> None:
    assert added_per_grade({3: 200, 4: 300}, REAL) == {0: 0, 1: 0, 2: 0, 3: 200, 4: 300}
    assert added_per_grade({"1": 5}, REAL) == {0: 0, 1: 5, 2: 0, 3: 0, 4: 0}  # YAML string keys


def test_totals_fill_each_grade_up_to_the_count_and_never_remove() -> None:
    # 30 total: grade 0 (50 real) and grade 2 (20 -> 10 added) behave differently
    assert added_per_grade(30, REAL, "total") == {0: 0, 1: 23, 2: 10, 3: 26, 4: 21}
    assert added_per_grade({3: 10, 4: 9}, REAL, "total") == {0: 0, 1: 0, 2: 0, 3: 6, 4: 0}


@pytest.mark.parametrize("strategy", IMBLEARN_STRATEGIES)
def test_imbalanced_learn_strategies_match_imbalanced_learn(strategy: str) -> None:
    expected = check_sampling_strategy(strategy, labels(REAL), "over-sampling")
    added = added_per_grade(strategy, REAL)
    assert added == {g: int(expected.get(g, 0)) for g in GRADES}
    assert all(isinstance(n, int) for n in added.values())


def test_imbalanced_learn_strategies_by_hand() -> None:
    to_majority = {0: 0, 1: 43, 2: 30, 3: 46, 4: 41}
    assert added_per_grade("not majority", REAL) == to_majority
    assert added_per_grade("all", REAL) == to_majority
    assert added_per_grade("auto", REAL) == to_majority
    assert added_per_grade("minority", REAL) == {0: 0, 1: 0, 2: 0, 3: 46, 4: 0}
    assert added_per_grade("not minority", REAL) == {0: 0, 1: 43, 2: 30, 3: 0, 4: 41}
    # count_as does not change a strategy's meaning
    assert added_per_grade("minority", REAL, "total") == added_per_grade("minority", REAL)


def test_a_ratio_fills_every_grade_up_to_that_share_of_the_largest() -> None:
    assert added_per_grade(0.5, REAL) == {0: 0, 1: 18, 2: 5, 3: 21, 4: 16}
    assert added_per_grade(1.0, REAL) == {0: 0, 1: 43, 2: 30, 3: 46, 4: 41}
    assert added_per_grade(0.21, REAL) == {0: 0, 1: 4, 2: 0, 3: 7, 4: 2}  # ceil(10.5) = 11
    # a grade with no training images gains nothing from a ratio
    assert added_per_grade(1.0, {**REAL, 3: 0})[3] == 0


@pytest.mark.parametrize(
    ("per_grade", "count_as", "message"),
    [
        (-5, "added", r"rebalance\.per_grade: expected a count >= 0, got -5"),
        ({3: -1}, "added", r"rebalance\.per_grade\.3: expected a count >= 0, got -1"),
        ({7: 3}, "added", r"grade 7 is outside 0-4"),
        ({"three": 3}, "added", r"grade 'three' is not an integer 0-4"),
        ("majority", "added", r"unknown strategy 'majority'"),
        ("100", "added", r"unknown strategy '100'"),
        (0.0, "added", r"a ratio to the largest grade must be in \(0, 1\]"),
        (1.5, "added", r"a ratio to the largest grade must be in \(0, 1\]"),
        (-0.5, "added", r"a ratio to the largest grade must be in \(0, 1\]"),
        (True, "added", r"expected a count >= 0, got True"),
        ({2: False}, "added", r"expected a count >= 0, got False"),
        ({0: 10, 3: 500}, "total", r"totals \(asked, real\) \{0: \(10, 50\)\} are below"),
        (100, "more", r"rebalance\.count_as: expected one of \('added', 'total'\), got 'more'"),
        ([1, 2], "added", r"expected a count >= 0"),
        (None, "added", r"expected a count >= 0, got None"),
    ],
)
def test_bad_targets_are_config_errors_naming_the_key(per_grade, count_as, message) -> None:
    with pytest.raises(ConfigError, match=message):
        added_per_grade(per_grade, REAL, count_as)


def test_an_int_total_below_a_grade_leaves_that_grade_alone() -> None:
    """`per_grade: 5, count_as: total` means "every grade up to 5": grades above keep theirs."""
    assert added_per_grade(5, REAL, "total") == {0: 0, 1: 0, 2: 0, 3: 1, 4: 0}


# ------------------------------------------------------------------ checked_methods


def test_methods_are_normalised_to_a_canonical_order() -> None:
    assert checked_methods("none") == ()
    assert checked_methods(["none"]) == ()
    assert checked_methods("oversample") == ("oversample",)
    assert checked_methods(["synthetic", "class_weight"]) == ("class_weight", "synthetic")
    assert checked_methods(("class_weight", "oversample")) == ("oversample", "class_weight")


@pytest.mark.parametrize(
    ("methods", "message"),
    [
        ("smote", r"rebalance\.methods: unknown or empty \['smote'\]"),
        (["synthetic", "vae"], r"unknown or empty \['vae'\]"),
        ([], r"unknown or empty \(\)"),
        (["none", "class_weight"], r"`none` cannot be combined"),
        (["oversample", "synthetic"], r"choose one source of added images"),
        (["synthetic", "oversample", "class_weight"], r"choose one source of added images"),
    ],
)
def test_bad_method_combinations_are_refused(methods, message) -> None:
    with pytest.raises(ConfigError, match=message):
        checked_methods(methods)


# ------------------------------------------------------------------ RebalancePlan


def test_plan_none_keeps_the_real_counts() -> None:
    plan = RebalancePlan.make(["none"], 100, "added", REAL)
    assert plan.methods == ()
    assert plan.synthetic == plan.oversampled == ZERO
    assert plan.total == REAL and plan.class_weights is None


def test_plan_oversample_adds_duplicates_only() -> None:
    plan = RebalancePlan.make(["oversample"], {1: 3, 3: 8}, "added", REAL)
    assert plan.oversampled == {0: 0, 1: 3, 2: 0, 3: 8, 4: 0}
    assert plan.synthetic == ZERO and plan.class_weights is None
    assert plan.total == {0: 50, 1: 10, 2: 20, 3: 12, 4: 9}


def test_plan_synthetic_adds_generated_images_only() -> None:
    plan = RebalancePlan.make(["synthetic"], 100, "added", REAL)
    assert plan.synthetic == dict.fromkeys(GRADES, 100)
    assert plan.oversampled == ZERO and plan.class_weights is None
    assert plan.total == {g: REAL[g] + 100 for g in GRADES}
    assert plan.counts() == {
        "train_real": REAL,
        "train_synthetic": plan.synthetic,
        "train_oversampled": ZERO,
    }


def balanced(counts: dict[int, int]) -> list[float]:
    present = [g for g in GRADES if counts[g]]
    weights = compute_class_weight("balanced", classes=np.array(present), y=labels(counts))
    return [float(weights[present.index(g)]) if g in present else 1.0 for g in GRADES]


def test_plan_class_weight_alone_weighs_the_real_counts() -> None:
    plan = RebalancePlan.make(["class_weight"], 100, "added", REAL)
    assert plan.synthetic == plan.oversampled == ZERO  # per_grade is ignored: nothing added
    assert plan.class_weights == pytest.approx(balanced(REAL), abs=1e-6)
    # n / (k * count): the rarest grade weighs most
    assert plan.class_weights[3] == pytest.approx(90 / (5 * 4), abs=1e-6)


def test_plan_synthetic_with_class_weight_weighs_the_final_counts() -> None:
    plan = RebalancePlan.make(["synthetic", "class_weight"], 10, "added", REAL)
    assert plan.methods == ("class_weight", "synthetic")
    assert plan.synthetic == dict.fromkeys(GRADES, 10)
    assert plan.total == {0: 60, 1: 17, 2: 30, 3: 14, 4: 19}
    assert plan.class_weights == pytest.approx(balanced(plan.total), abs=1e-6)
    assert plan.class_weights != pytest.approx(balanced(REAL), abs=1e-3)


def test_plan_class_weight_gives_an_absent_grade_weight_one() -> None:
    real = {0: 30, 1: 10, 2: 0, 3: 5, 4: 5}
    plan = RebalancePlan.make(["class_weight"], 0, "added", real)
    assert plan.class_weights[2] == 1.0
    # the others are balanced over the four grades present (k = 4)
    assert plan.class_weights[0] == pytest.approx(50 / (4 * 30), abs=1e-6)


def test_plan_refuses_images_for_a_grade_without_training_images() -> None:
    real = {**REAL, 3: 0}
    for methods in (["synthetic"], ["oversample"]):
        with pytest.raises(ConfigError, match=r"grade\(s\) \[3\], which have no training"):
            RebalancePlan.make(methods, 10, "added", real)
    # a real count that is simply missing from the mapping is zero as well
    with pytest.raises(ConfigError, match=r"grade\(s\) \[4\]"):
        RebalancePlan.make(["oversample"], {4: 1}, "added", {0: 3, 1: 3})
    # asking nothing of the empty grade is fine
    plan = RebalancePlan.make(["synthetic"], {1: 4}, "added", real)
    assert plan.synthetic == {0: 0, 1: 4, 2: 0, 3: 0, 4: 0}


def test_plan_refuses_bad_methods() -> None:
    with pytest.raises(ConfigError, match="choose one source"):
        RebalancePlan.make(["oversample", "synthetic"], 10, "added", REAL)
    with pytest.raises(ConfigError, match="unknown or empty"):
        RebalancePlan.make(["smote"], 10, "added", REAL)


def test_plan_table_shows_before_after_and_the_synthetic_share() -> None:
    plan = RebalancePlan.make(["synthetic", "class_weight"], 10, "added", REAL)
    table = plan.table()
    lines = table.splitlines()
    assert lines[0] == "rebalance class_weight+synthetic:"
    rows = {line[:14].strip(): line[14:].split() for line in lines[2:7]}
    assert rows["real"] == ["50", "7", "20", "4", "9", "90"]
    assert rows["+ synthetic"] == ["10"] * 5 + ["50"]
    assert rows["+ oversampled"] == ["0"] * 5 + ["0"]
    assert rows["= train"] == ["60", "17", "30", "14", "19", "140"]
    assert rows["loss weight"] == [f"{w:.3f}" for w in plan.class_weights]
    assert lines[-1] == "50 of 140 training images are synthetic (35.7%)"
    none = RebalancePlan.make(["none"], 0, "added", REAL).table()
    assert none.startswith("rebalance none:") and "loss weight" not in none
    assert none.endswith("0 of 90 training images are synthetic (0.0%)")


# ------------------------------------------------------------------ oversample_indices


def test_oversampling_duplicates_training_images_of_each_grade_exactly() -> None:
    rng = np.random.default_rng(1)
    indices = np.sort(rng.choice(1000, size=60, replace=False))  # a split's cache indices
    grades = rng.integers(0, 5, size=60)
    grade_of = dict(zip(indices.tolist(), grades.tolist(), strict=True))
    added = {0: 0, 1: 7, 2: 0, 3: 25, 4: 2}
    extra = oversample_indices(indices, grades, added, seed=3)
    assert len(extra) == sum(added.values())
    assert set(extra.tolist()) <= set(indices.tolist())  # never an index outside the split
    drawn = [grade_of[i] for i in extra.tolist()]
    assert {g: drawn.count(g) for g in GRADES} == added
    again = oversample_indices(indices, grades, added, seed=3)
    assert np.array_equal(extra, again)
    other = oversample_indices(indices, grades, added, seed=4)
    assert not np.array_equal(extra, other)


def test_oversampling_nothing_gives_no_index() -> None:
    indices, grades = np.arange(10), np.array([0, 1] * 5)
    assert oversample_indices(indices, grades, ZERO, seed=0).size == 0
    assert oversample_indices(indices, grades, {}, seed=0).size == 0


def test_oversampling_a_split_of_one_grade() -> None:
    extra = oversample_indices(np.arange(10, 16), np.full(6, 3), {3: 4}, seed=0)
    assert len(extra) == 4 and set(extra.tolist()) <= set(range(10, 16))


def test_a_fractional_grade_key_is_refused() -> None:
    with pytest.raises(ConfigError, match="is not an integer 0-4"):
        added_per_grade({3.7: 5}, REAL)


# ------------------------------------------------------------------ the DataModule


def grade_counts(dataset) -> dict[int, int]:
    grades = [int(grade) for _, grade in dataset]
    return {g: grades.count(g) for g in GRADES}


def pixels(image: torch.Tensor) -> bytes:
    return image.permute(1, 2, 0).numpy().tobytes()  # (S, S, 3), as the cache holds it


def test_oversampled_training_split_has_the_planned_counts(tiny_cache, tiny_splits) -> None:
    real = real_counts(tiny_cache, tiny_splits)
    plan = RebalancePlan.make(["oversample"], {1: 3, 3: 6, 4: 1}, "added", real)
    dm = FundusDataModule(tiny_cache, tiny_splits, batch_size=8, plan=plan, seed=5)
    train = dm.train_dataset()
    assert isinstance(train, ImageArray)  # no synthetic source: real images only
    assert grade_counts(train) == plan.total
    n = len(tiny_splits.train)
    assert np.array_equal(train.indices[:n], tiny_splits.train)  # every real image once
    assert set(train.indices[n:].tolist()) <= set(tiny_splits.train.tolist())  # plus duplicates
    assert np.array_equal(dm.train_dataset().indices, train.indices)  # seeded
    seen = {pixels(image) for image, _ in train}
    allowed = {tiny_cache.images[i].tobytes() for i in tiny_splits.train}
    assert seen <= allowed


def test_synthetic_images_join_training_only(tiny_cache, tiny_splits) -> None:
    real = real_counts(tiny_cache, tiny_splits)
    plan = RebalancePlan.make(["synthetic", "class_weight"], {0: 2, 2: 5, 4: 3}, "added", real)
    source = synthetic_set(plan)
    dm = FundusDataModule(tiny_cache, tiny_splits, batch_size=8, plan=plan, synthetic=source)
    train = dm.train_dataset()
    assert isinstance(train, ConcatDataset)
    assert len(train) == sum(plan.total.values())
    assert grade_counts(train) == plan.total
    fake = {image.tobytes() for image in source.images}
    seen = [pixels(image) for image, _ in train]
    assert sum(p in fake for p in seen) == sum(plan.synthetic.values())
    assert fake <= set(seen)
    for split in ("val", "test"):
        assert not fake & {pixels(image) for image, _ in dm.dataset(split)}


@pytest.mark.parametrize("methods", [["oversample"], ["synthetic"]])
def test_val_and_test_hold_exactly_their_real_images(tiny_cache, tiny_splits, methods) -> None:
    """No synthetic or oversampled image ever reaches validation or test."""
    real = real_counts(tiny_cache, tiny_splits)
    plan = RebalancePlan.make(methods, 4, "added", real)
    source = synthetic_set(plan) if "synthetic" in methods else None
    dm = FundusDataModule(tiny_cache, tiny_splits, batch_size=4, plan=plan, synthetic=source)
    for split in ("val", "test"):
        expected = getattr(tiny_splits, split)
        dataset = dm.dataset(split)
        assert np.array_equal(dataset.indices, expected)
        assert len(np.unique(dataset.indices)) == len(expected)
        loader = dm.val_dataloader() if split == "val" else dm.test_dataloader()
        images = torch.cat([batch[0] for batch in loader])
        grades = torch.cat([batch[1] for batch in loader])
        assert images.dtype == torch.uint8
        assert np.array_equal(images.permute(0, 2, 3, 1).numpy(), tiny_cache.images[expected])
        assert grades.tolist() == tiny_cache.grades[expected].tolist()
    assert not set(tiny_splits.train) & (set(tiny_splits.val) | set(tiny_splits.test))


def test_augmentation_reaches_every_training_image_but_not_val_or_test(
    tiny_cache, tiny_splits
) -> None:
    real = real_counts(tiny_cache, tiny_splits)
    plan = RebalancePlan.make(["synthetic"], {1: 2, 3: 3}, "added", real)
    source = synthetic_set(plan)
    flip = A.HorizontalFlip(p=1.0)
    dm = FundusDataModule(tiny_cache, tiny_splits, plan=plan, synthetic=source, augment=flip)
    train = dm.train_dataset()
    n = len(tiny_splits.train)
    expected = [tiny_cache.images[i] for i in tiny_splits.train] + list(source.images)
    assert len(train) == len(expected)
    for (image, _), original in zip(train, expected, strict=True):
        assert not np.array_equal(original, original[:, ::-1])  # a flip is visible
        assert np.array_equal(image.permute(1, 2, 0).numpy(), original[:, ::-1])
    assert len(train) - n == 5
    for split in ("val", "test"):
        for (image, _), i in zip(dm.dataset(split), getattr(tiny_splits, split), strict=True):
            assert np.array_equal(image.permute(1, 2, 0).numpy(), tiny_cache.images[i])


def test_a_plan_with_synthetic_images_needs_a_source(tiny_cache, tiny_splits) -> None:
    real = real_counts(tiny_cache, tiny_splits)
    plan = RebalancePlan.make(["synthetic"], 2, "added", real)
    with pytest.raises(ValueError, match="adds synthetic images, but no source was given"):
        FundusDataModule(tiny_cache, tiny_splits, plan=plan)
    # a plan that adds none needs none
    nothing = RebalancePlan.make(["synthetic"], 0, "added", real)
    assert (
        grade_counts(FundusDataModule(tiny_cache, tiny_splits, plan=nothing).train_dataset())
        == real
    )


def test_class_weight_only_leaves_the_training_split_real(tiny_cache, tiny_splits) -> None:
    real = real_counts(tiny_cache, tiny_splits)
    plan = RebalancePlan.make(["class_weight"], 50, "added", real)
    train = FundusDataModule(tiny_cache, tiny_splits, plan=plan).train_dataset()
    assert np.array_equal(train.indices, tiny_splits.train)
    assert grade_counts(train) == real == plan.total


def test_a_plan_that_adds_nothing_shares_the_key_of_none() -> None:
    """An ablation's count 0 trains exactly the baseline: one classifier training for both."""
    real = {0: 50, 1: 5, 2: 9, 3: 2, 4: 1}
    none = RebalancePlan.make(["none"], 0, "added", real)
    assert RebalancePlan.make(["synthetic"], 0, "added", real).key_material() == asdict(none)
    weighted = RebalancePlan.make(["synthetic", "class_weight"], 0, "added", real)
    assert (
        weighted.key_material()
        == RebalancePlan.make(["class_weight"], 0, "added", real).key_material()
    )
    some = RebalancePlan.make(["synthetic"], 1, "added", real)
    assert some.key_material()["methods"] == ("synthetic",)
