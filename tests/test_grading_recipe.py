"""The DR-grading recipe (issue #17): grade heads, QWK-fitted thresholds kept in the
checkpoint, the class-balanced sampler, the warm-up + cosine schedule, EMA, and the
`classifier=dr_recipe` config running end to end."""

from __future__ import annotations

import itertools
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from conftest import MODEL, SIZE, images_uint8, loader, quiet_trainer  # tests/ on sys.path
from sklearn.metrics import cohen_kappa_score

from drvae.callbacks.ema import WarmupEMA, warmup_ema
from drvae.data.dataset import EpochBalanced, balance_power, dataset_grades
from drvae.metrics.thresholds import DEFAULT_THRESHOLDS, fit_thresholds, qwk, to_grades
from drvae.models.checkpoints import load_classifier, read_checkpoint
from drvae.models.classifier import CHECKPOINT_KIND, GradeClassifier
from drvae.models.grading_heads import exceedances, grade_score, grade_scores, head_loss
from drvae.models.optim import WarmupCosine

pytestmark = pytest.mark.usefixtures("torch_one_thread")


# ------------------------------------------------------------------ thresholds


def test_qwk_equals_scikit_learn() -> None:
    rng = np.random.default_rng(0)
    grades, predicted = rng.integers(0, 5, 300), rng.integers(0, 5, 300)
    predicted[:150] = grades[:150]
    expected = cohen_kappa_score(grades, predicted, weights="quadratic")
    assert qwk(grades, predicted) == pytest.approx(expected, abs=1e-12)


def test_fitted_thresholds_recover_a_shifted_scale() -> None:
    """Scores on a stretched, shifted scale (grade g scores 2g + 3 + noise): plain rounding
    grades them badly, the fitted cut points land between the groups and grade them all."""
    rng = np.random.default_rng(1)
    grades = rng.integers(0, 5, 500)
    scores = 2 * grades + 3 + rng.uniform(-0.4, 0.4, 500)
    assert qwk(grades, to_grades(scores, DEFAULT_THRESHOLDS)) < 0.5
    fitted = fit_thresholds(scores, grades)
    assert list(fitted) == sorted(fitted)
    assert qwk(grades, to_grades(scores, fitted)) == 1.0
    for g, cut in enumerate(fitted):
        assert 2 * g + 3.4 <= cut <= 2 * g + 4.6


def test_fitting_never_does_worse_than_rounding() -> None:
    rng = np.random.default_rng(2)
    grades = rng.integers(0, 5, 200)
    scores = grades + rng.normal(0, 1.5, 200)
    rounded = qwk(grades, to_grades(scores, DEFAULT_THRESHOLDS))
    assert qwk(grades, to_grades(scores, fit_thresholds(scores, grades))) >= rounded


# ------------------------------------------------------------------ heads


@pytest.mark.parametrize("head", ["classification", "regression", "ordinal"])
def test_grade_scores_argmax_is_the_final_grade(head: str) -> None:
    outputs = {"classification": 5, "regression": 1, "ordinal": 4}[head]
    raw = 3 * torch.randn(200, outputs, generator=torch.Generator().manual_seed(0))
    scores, grades = grade_scores(head, raw, torch.tensor([0.3, 1.1, 2.6, 3.2]))
    assert torch.equal(scores.argmax(dim=1), grades)
    assert torch.allclose(scores.sum(dim=1), torch.ones(200))
    assert scores.min() >= 0


def test_regression_grades_are_the_score_cut_at_the_thresholds() -> None:
    raw = torch.tensor([[-1.0], [0.5], [1.0], [2.0], [2.9], [9.0]])
    _, grades = grade_scores("regression", raw, torch.tensor([0.4, 1.5, 2.5, 3.0]))
    assert grades.tolist() == [0, 1, 1, 2, 3, 4]


def test_referable_score_is_ordered_like_the_regression_score() -> None:
    """AUROC of referable DR ranks by p2 + p3 + p4: it must follow the raw score exactly."""
    raw = torch.linspace(-1, 5, 61)[:, None]
    scores, _ = grade_scores("regression", raw, torch.tensor(DEFAULT_THRESHOLDS))
    referable = scores[:, 2:].sum(dim=1)
    assert bool((referable.diff() > 0).all())


def test_ordinal_grades_are_the_expected_grade_cut_at_the_thresholds() -> None:
    """Sum of P(grade > k), made non-increasing first; cut like the regressed grade."""
    above = torch.tensor([[0.9, 0.6, 0.3, 0.1], [0.2, 0.8, 0.1, 0.1]])  # row 2: 0.2 caps all
    raw = torch.logit(above)
    assert grade_score("ordinal", raw).tolist() == pytest.approx([1.9, 0.6])
    _, default = grade_scores("ordinal", raw, torch.tensor(DEFAULT_THRESHOLDS))
    _, fitted = grade_scores("ordinal", raw, torch.tensor([0.3, 1.1, 1.8, 3.2]))
    assert default.tolist() == [2, 1] and fitted.tolist() == [3, 1]


def test_ordinal_targets_and_loss() -> None:
    grades = torch.tensor([0, 2, 4])
    targets = exceedances(torch.nn.functional.one_hot(grades, 5).float())
    assert targets.tolist() == [[0, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 1]]
    right = torch.tensor([[-9.0] * 4, [9, 9, -9, -9], [9.0] * 4])
    assert head_loss("ordinal", right, grades, None) < 1e-3
    assert head_loss("ordinal", -right, grades, None) > 10


def test_class_weights_weigh_the_regression_loss_per_grade() -> None:
    outputs, grades = torch.tensor([[1.0], [1.0]]), torch.tensor([0, 4])  # errors 1 and 3
    plain = head_loss("regression", outputs, grades, None)
    heavy_four = head_loss("regression", outputs, grades, torch.tensor([1.0, 1, 1, 1, 3]))
    assert plain == pytest.approx((0.5 + 2.5) / 2)
    assert heavy_four == pytest.approx((0.5 + 3 * 2.5) / 4)


@pytest.fixture(scope="module")
def regression_fit(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One epoch of a regression-head classifier with EMA; its checkpoint."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("regression")
    L.seed_everything(0, workers=True)
    model = GradeClassifier(MODEL, image_size=SIZE, head="regression")
    trainer = quiet_trainer(callbacks=[WarmupEMA(decay=0.9)], default_root_dir=tmp)
    trainer.fit(model, loader(24, seed=1, shuffle=True), loader(20, seed=2))
    checkpoint = tmp / "classifier.ckpt"
    trainer.save_checkpoint(checkpoint)
    torch.set_num_threads(threads)
    return {"model": model, "checkpoint": checkpoint}


def test_validation_refits_the_thresholds_and_the_checkpoint_keeps_them(regression_fit) -> None:
    model = regression_fit["model"]
    assert tuple(model.thresholds.tolist()) != DEFAULT_THRESHOLDS
    loaded = load_classifier(regression_fit["checkpoint"])
    assert torch.equal(loaded.thresholds, model.thresholds)
    images = images_uint8(6, seed=5)
    with torch.no_grad():
        scores = loaded.predict_step((images, None), 0)
        raw = loaded(images)[:, 0]
    assert scores.argmax(1).tolist() == to_grades(raw.numpy(), loaded.thresholds.numpy()).tolist()


def test_validation_refits_the_ordinal_heads_thresholds_too(tmp_path: Path) -> None:
    """A balanced sampler shifts every P(grade > k): the expected grade is cut where
    validation QWK is highest, as the regressed grade is."""
    L.seed_everything(0, workers=True)
    model = GradeClassifier(MODEL, image_size=SIZE, head="ordinal")
    quiet_trainer(default_root_dir=tmp_path).fit(model, loader(24, seed=1), loader(20, seed=2))
    assert tuple(model.thresholds.tolist()) != DEFAULT_THRESHOLDS
    images = images_uint8(6, seed=5)
    with torch.no_grad():
        scores = model.predict_step((images, None), 0)
        expected = grade_score("ordinal", model(images))
    assert (
        scores.argmax(1).tolist() == to_grades(expected.numpy(), model.thresholds.numpy()).tolist()
    )


def test_test_metrics_grade_with_the_fitted_thresholds(regression_fit) -> None:
    """The test confusion matrix counts the thresholded grades, not a rounding."""
    model = load_classifier(regression_fit["checkpoint"])
    tested = quiet_trainer().test(model, loader(15, seed=3), verbose=False)[0]
    images = torch.cat([batch[0] for batch in loader(15, seed=3)])
    truth = torch.cat([batch[1] for batch in loader(15, seed=3)])
    with torch.no_grad():
        grades = to_grades(model(images)[:, 0].numpy(), model.thresholds.numpy())
    expected = cohen_kappa_score(truth.numpy(), grades, weights="quadratic", labels=range(5))
    assert tested["test/qwk"] == pytest.approx(expected, abs=1e-5)
    assert model.last_confusion["test"].diagonal().sum() == int((grades == truth.numpy()).sum())


# ------------------------------------------------------------------ sampler and schedule


def test_balanced_sampler_draws_every_grade_equally_often() -> None:
    grades = np.array([0] * 900 + [1] * 60 + [2] * 30 + [3] * 8 + [4] * 2)
    drawn = list(EpochBalanced(grades, seed=3))
    assert len(drawn) == len(grades) and drawn == list(EpochBalanced(grades, seed=3))
    shares = np.bincount(grades[drawn], minlength=5) / len(drawn)
    assert np.allclose(shares, 0.2, atol=0.04)
    assert drawn != list(EpochBalanced(grades, seed=4))


def test_balanced_sampler_power_sets_each_grades_share() -> None:
    counts = np.array([900, 60, 30, 8, 2])
    grades = np.repeat(np.arange(5), counts)
    for power in (0.5, 0.0):
        drawn = np.concatenate([list(EpochBalanced(grades, seed, power)) for seed in range(20)])
        shares = np.bincount(grades[drawn], minlength=5) / len(drawn)
        expected = counts ** (1 - power) / (counts ** (1 - power)).sum()
        assert np.allclose(shares, expected, atol=0.01), (power, shares, expected)


def test_balance_power_moves_linearly_to_its_end() -> None:
    assert [balance_power(1.0, None, e, 10) for e in (0, 9)] == [1.0, 1.0]
    assert [balance_power(1.0, 0.5, e, 11) for e in (0, 5, 10, 12)] == [1.0, 0.75, 0.5, 0.5]
    assert balance_power(1.0, 0.0, 0, 1) == 1.0  # a 1-epoch run trains at the start power
    assert balance_power(0.5, None, 3, -1) == 0.5  # constant: any max_epochs will do
    with pytest.raises(ValueError, match=r"balance_power_end needs a bounded"):
        balance_power(1.0, 0.5, 3, -1)  # max_epochs=-1: no last epoch to reach it by


def test_datamodule_draws_each_epoch_at_its_balance_power() -> None:
    from types import SimpleNamespace

    from drvae.data.dataset import FundusDataModule

    counts = np.array([400, 40, 20, 10, 10])
    grades = np.repeat(np.arange(5), counts)
    cache = SimpleNamespace(images=np.zeros((len(grades), 2, 2, 3), np.uint8), grades=grades)
    splits = SimpleNamespace(train=np.arange(len(grades)))
    dm = FundusDataModule(cache, splits, 16, sampler="balanced", balance=(1.0, 0.0))

    def share_of_grade_0(epoch: int) -> float:
        dm.trainer = SimpleNamespace(current_epoch=epoch, max_epochs=3)
        drawn = list(dm.train_dataloader().sampler)
        return float(np.mean(grades[drawn] == 0))

    assert share_of_grade_0(0) < 0.35 and share_of_grade_0(2) > 0.7  # 0.2, then 400/480


def test_a_negative_or_textual_balance_power_names_its_key() -> None:
    from omegaconf import OmegaConf

    from drvae.errors import ConfigError
    from drvae.pipeline.classifier_stage import recipe_key_material, sampler_balance

    default = OmegaConf.create({"sampler": "balanced", "balance_power": 1.0})
    assert sampler_balance(default) == (1.0, None) and "balance" not in recipe_key_material(default)
    decayed = OmegaConf.create({"sampler": "balanced", "balance_power_end": 0.5})
    assert recipe_key_material(decayed)["balance"] == [1.0, 0.5]
    for key, value in [("balance_power", -1), ("balance_power_end", "half")]:
        with pytest.raises(ConfigError, match=rf"classifier\.{key}: expected a number >= 0"):
            sampler_balance(OmegaConf.create({key: value}))


def test_dataset_grades_follow_a_concatenation(tmp_path: Path) -> None:
    from torch.utils.data import ConcatDataset

    from drvae.data.dataset import ImageArray

    images = np.zeros((4, 2, 2, 3), np.uint8)
    first = ImageArray(images, np.array([0, 1, 2, 3]), [3, 1])
    second = ImageArray(images[:2], np.array([4, 4]))
    assert dataset_grades(ConcatDataset([first, second])).tolist() == [3, 1, 4, 4]


def test_warmup_cosine_rises_then_decays_to_its_floor() -> None:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = WarmupCosine(optimizer, total_steps=100, warmup_fraction=0.1, min_lr_ratio=0.01)
    rates = []
    for _ in range(100):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert rates[0] == pytest.approx(0.1) and rates[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in itertools.pairwise(rates[9:]))
    assert rates[-1] == pytest.approx(0.01, abs=0.01)


# ------------------------------------------------------------------ end to end


def test_the_dr_recipe_runs_end_to_end_and_grades_with_its_thresholds(tmp_path: Path) -> None:
    """`classifier=dr_recipe` with the regression head composes and runs (balanced sampler, warm-up
    cosine, EMA, fundus augmentation); its test predictions are the thresholded grades of
    the checkpoint it keeps, and every piece is in the stage's key."""
    import csv

    from conftest import config

    from drvae.pipeline.run import run

    recipe = ["classifier=dr_recipe", "classifier.model.head=regression", "rebalance=none"]
    cfg = config(tmp_path / "cache", tmp_path / "out", *recipe)
    assert cfg.classifier.model.head == "regression" and cfg.classifier.sampler == "balanced"
    results = run(cfg)
    stage = results["stages"]["classifier"]
    model = load_classifier(stage["path"])
    assert model.hparams.head == "regression"
    assert (
        read_checkpoint(stage["path"], CHECKPOINT_KIND)["grade_thresholds"]
        == model.thresholds.tolist()
    )
    with open(Path(stage["predictions"]), newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == sum(results["counts"]["test"].values())
    matrix = np.zeros((5, 5), int)
    for row in rows:
        scores = [float(row[f"p{g}"]) for g in range(5)]
        assert int(row["predicted"]) == int(np.argmax(scores))
        matrix[int(row["grade"]), int(row["predicted"])] += 1
    assert matrix.tolist() == stage["confusion_matrix"]
    again = config(tmp_path / "cache", tmp_path / "out2", *recipe)
    again.classifier.sampler = "shuffle"
    from drvae.pipeline.classifier_stage import recipe_key_material

    assert recipe_key_material(again.classifier) != recipe_key_material(cfg.classifier)


def test_the_ema_decay_warms_up_to_its_value() -> None:
    """Update n moves the average by 1 - min(decay, (1 + n) / (10 + n)) of the gap."""
    average = warmup_ema(0.99)
    zero, one = torch.zeros(1), torch.ones(1)
    assert float(average(zero, one, torch.tensor(0))) == pytest.approx(0.9)
    assert float(average(zero, one, torch.tensor(1000))) == pytest.approx(0.01)


def test_test_time_augmentation_makes_the_grade_invariant_to_flips_and_turns() -> None:
    """With tta, an image and any of its flips or quarter turns are graded alike (the
    views are the same 8); without, a random network grades them apart."""
    torch.manual_seed(0)
    plain = GradeClassifier(MODEL, image_size=SIZE).eval()
    averaged = GradeClassifier(MODEL, image_size=SIZE, tta=True).eval()
    averaged.load_state_dict(plain.state_dict())
    images = images_uint8(3, seed=7)
    turned = torch.rot90(images, 1, dims=(2, 3)).flip(3)
    with torch.no_grad():
        assert torch.allclose(averaged.evaluate(images), averaged.evaluate(turned), atol=1e-5)
        assert not torch.allclose(plain.evaluate(images), plain.evaluate(turned), atol=1e-5)


# ------------------------------------------------------------------ mixup / cutmix


def test_soft_target_losses_are_the_plain_losses_on_one_hot_targets() -> None:
    from drvae.models.grading_heads import soft_target_loss

    grades = torch.tensor([0, 1, 2, 3, 4, 4])
    one_hot = torch.nn.functional.one_hot(grades, 5).float()
    weight = torch.tensor([0.5, 1.0, 2.0, 3.0, 4.0])
    logits = torch.randn(6, 5)
    for w in (None, weight):
        plain = torch.nn.functional.cross_entropy(logits, grades, weight=w)
        assert soft_target_loss("classification", logits, one_hot, w) == pytest.approx(float(plain))
        for head, width in (("regression", 1), ("ordinal", 4)):
            outputs = torch.randn(6, width)
            expected = float(head_loss(head, outputs, grades, w))
            assert soft_target_loss(head, outputs, one_hot, w) == pytest.approx(expected)


def test_blended_grades_are_learnt_as_their_mean_grade_and_their_exceedances() -> None:
    """A 30/70 blend of grades 0 and 4: the regression head's target is 2.8, the ordinal
    head's P(grade > k) is 0.7 at every cut."""
    from drvae.models.grading_heads import soft_target_loss

    blend = torch.tensor([[0.3, 0.0, 0.0, 0.0, 0.7]])
    assert soft_target_loss("regression", torch.tensor([[2.8]]), blend, None) == 0
    assert soft_target_loss("regression", torch.tensor([[4.0]]), blend, None) > 0.5
    exact = torch.logit(torch.full((1, 4), 0.7))
    floor = float(soft_target_loss("ordinal", exact, blend, None))  # the blend's own entropy
    assert floor == pytest.approx(4 * float(torch.distributions.Bernoulli(0.7).entropy()))
    assert soft_target_loss("ordinal", torch.full((1, 4), 9.0), blend, None) > floor + 1


def test_mixup_blends_the_training_images_and_learns_the_blended_grades() -> None:
    """With mixup at probability 1 the network sees blends of the batch's images, never an
    original, and the loss is the soft cross-entropy against timm's blended grades."""
    torch.manual_seed(0)
    np.random.seed(0)  # timm draws the blend weight from numpy's global generator
    model = GradeClassifier(MODEL, image_size=SIZE, mixup={"mixup_alpha": 1.0, "prob": 1.0})
    images, grades = images_uint8(4, seed=3), torch.tensor([0, 1, 3, 4])
    seen = []
    model.net.register_forward_hook(lambda _m, args, _out: seen.append(args[0]))
    loss = model.training_step((images, grades), 0)
    originals = ((images.float() / 255 - model.mean) / model.std).contiguous()
    assert torch.isfinite(loss) and len(seen) == 1
    assert not any(torch.allclose(seen[0][i], originals[i], atol=1e-3) for i in range(4))
    odd = model.training_step((images[:3], grades[:3]), 1)  # timm pairs images: odd = plain
    assert float(odd) == pytest.approx(float(model.loss(model(images[:3]), grades[:3])), rel=1e-4)


def test_mixup_is_refused_with_the_focal_loss() -> None:
    from drvae.errors import ConfigError

    with pytest.raises(ConfigError, match=r"classifier\.model\.mixup needs loss=ce"):
        GradeClassifier(MODEL, image_size=SIZE, loss="focal", mixup={"prob": 1.0})


def test_mixup_trains_the_regression_head_on_the_blends_mean_grade() -> None:
    """The regression head with mixup: timm's blend weight fixes the target, lam * y_i +
    (1 - lam) * y_flipped; the step's loss is the smooth L1 against it."""
    torch.manual_seed(0)
    model = GradeClassifier(MODEL, image_size=SIZE, head="regression", mixup={"mixup_alpha": 1.0})
    images, grades = images_uint8(4, seed=3), torch.tensor([0, 1, 3, 4])
    np.random.seed(0)
    np.random.rand()  # timm draws whether to mix (prob 1), then the blend weight
    lam = float(np.random.beta(1.0, 1.0))
    np.random.seed(0)
    seen: list[torch.Tensor] = []
    model.net.register_forward_hook(lambda _m, _args, out: seen.append(out))
    loss = model.training_step((images, grades), 0)
    target = lam * grades.float() + (1 - lam) * grades.flip(0).float()
    expected = torch.nn.functional.smooth_l1_loss(seen[0][:, 0].float(), target)
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)


def test_a_balance_schedule_without_a_last_epoch_is_refused_before_any_work(tmp_path: Path) -> None:
    from conftest import config

    from drvae.errors import ConfigError
    from drvae.pipeline.run import run

    overrides = ["classifier.balance_power_end=0.5", "classifier.trainer.max_epochs=-1"]
    with pytest.raises(ConfigError, match=r"balance_power_end needs a bounded"):
        run(config(tmp_path, tmp_path / "out", *overrides))
    assert not (tmp_path / "out").exists()
