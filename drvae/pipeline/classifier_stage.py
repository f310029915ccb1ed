"""Stage `classifier`: train the timm grader on the (rebalanced) TRAIN split, keep the best
checkpoint by `classifier.monitor` on real validation images, and score it on the real test
split. The stage folder holds `classifier.ckpt`; its record holds the test metrics."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import Tensor

from drvae.callbacks import ConfusionMatrixLogger
from drvae.callbacks.ema import WarmupEMA
from drvae.config import plain
from drvae.data.dataset import FundusDataModule, SyntheticSource
from drvae.data.rebalance import RebalancePlan
from drvae.errors import ConfigError
from drvae.integrity import sha256_file
from drvae.models.checkpoints import load_classifier
from drvae.models.classifier import HUB_PREFIX, GradeClassifier
from drvae.pipeline.data import PreparedData
from drvae.pipeline.store import StageResult, StageStore, config_key
from drvae.pipeline.training import (
    best_checkpoint,
    evaluator,
    fit_keeping_best,
    make_trainer,
    rounded,
    trainer_key_material,
)
from drvae.run_folder import CLASSIFIER, PREDICTIONS, write_predictions


def classifier_key(
    cfg: DictConfig, data: PreparedData, plan: RebalancePlan, synthetic_key: str | None
) -> str:
    """Over the data, seed, classifier config, rebalancing and the synthetic images' origin."""
    c = cfg.classifier
    weights = c.model.get("pretrained")
    return config_key(
        "classifier",
        weights_key(c.model.model_name, weights),
        data.key,
        cfg.seed,
        model_key_material(c.model),
        c.optimizer,
        c.scheduler,
        c.batch_size,
        c.monitor,
        c.augment,
        recipe_key_material(c),
        plan.key_material(),
        synthetic_key,
        trainer_key_material(cfg, "classifier"),
    )


def weights_key(model_name: str, weights: str | bool | None) -> str | None:
    """A local weights file by its contents (not its name); hub weights by their id."""
    if not weights:
        return None
    if weights is True or str(weights).startswith(HUB_PREFIX):
        return f"hub:{model_name if weights is True else weights}"
    return sha256_file(Path(weights).expanduser())


def model_key_material(model: DictConfig) -> dict[str, Any]:
    """`classifier.model`, without the keys added since whose default is unchanged
    behaviour (so the stages trained before them stay valid)."""
    material = plain(model)
    if not material.get("fellow_eye"):
        material.pop("fellow_eye", None)
    return material


def fellow_eye_pairs(cfg: DictConfig, dm: FundusDataModule) -> dict[str, int] | None:
    """classifier.model.fellow_eye: how many validation and test images have their fellow
    eye in their split; a clear error where no validation image has (nothing to fit)."""
    if not cfg.classifier.model.get("fellow_eye"):
        return None
    pairs = {split: int((dm.fellow_index(split) >= 0).sum()) for split in ("val", "test")}
    if not pairs["val"]:
        raise ConfigError(
            f"classifier.model.fellow_eye=true, but no validation image of data.source "
            f"{cfg.data.source!r} has its fellow eye (same patient, the other eye) in the "
            "split: the source records no eyes or no pairs; set it to false"
        )
    return pairs


def recipe_key_material(c: DictConfig) -> dict[str, Any]:
    """The training recipe's settings outside `model`, `optimizer` and `augment`."""
    material = {"sampler": c.get("sampler", "shuffle"), "ema_decay": c.get("ema_decay")}
    balance = sampler_balance(c)
    if balance != (1.0, None):  # keys of the default unchanged: caches stay valid
        material["balance"] = list(balance)
    return material


def sampler_balance(c: DictConfig) -> tuple[float, float | None]:
    """`classifier.balance_power` and `balance_power_end` (the balanced sampler's weights)."""
    start, end = c.get("balance_power", 1.0), c.get("balance_power_end")
    for key, value in (("balance_power", start), ("balance_power_end", end)):
        valid = isinstance(value, int | float) and not isinstance(value, bool) and value >= 0
        if not valid and not (key == "balance_power_end" and value is None):
            raise ConfigError(f"classifier.{key}: expected a number >= 0, got {value!r}")
    return float(start), None if end is None else float(end)


def training_callbacks(c: DictConfig) -> list[L.Callback]:
    """EMA of the weights (`classifier.ema_decay`, warmed up): validated, kept and tested."""
    return [WarmupEMA(decay=c.ema_decay)] if c.get("ema_decay") else []


def build_classifier(
    cfg: DictConfig, image_size: int, class_weights: list[float] | None = None
) -> GradeClassifier:
    """The classifier the config describes (before training)."""
    c = cfg.classifier
    return GradeClassifier(
        image_size=image_size,
        **plain(c.model),
        class_weights=class_weights,
        optimizer=plain(c.optimizer),
        scheduler=plain(c.scheduler),
        monitor=c.monitor,
    )


def _datamodule(
    cfg: DictConfig, data: PreparedData, plan: RebalancePlan, synthetic: SyntheticSource | None
) -> FundusDataModule:
    augment = instantiate(cfg.classifier.augment) if cfg.classifier.get("augment") else None
    return FundusDataModule(
        data.cache,
        data.splits,
        cfg.classifier.batch_size,
        cfg.data.num_workers,
        plan=plan,
        synthetic=synthetic,
        augment=augment,
        seed=cfg.seed,
        sampler=cfg.classifier.get("sampler", "shuffle"),
        balance=sampler_balance(cfg.classifier),
    )


def test_scores(
    trainer: L.Trainer, model: GradeClassifier, dm: FundusDataModule
) -> tuple[dict[str, float], Tensor, Tensor]:
    """Test `model` on `dm`'s test split: its `test/...` metrics, and per image (N, K)
    probabilities and (N,) true grades. External test sets are scored through this too."""
    tested = trainer.test(model, datamodule=dm, verbose=False)[0]
    probs, grades = model.test_predictions()
    return tested, probs, grades


def _train_and_test(
    cfg: DictConfig,
    dm: FundusDataModule,
    model: GradeClassifier,
    scratch: Path,
    log_root: Path,
    label: str,
    predictions: Path,
) -> tuple[Path, dict[str, Any]]:
    pairs = fellow_eye_pairs(cfg, dm)  # before training: a config error fails fast
    best = best_checkpoint(scratch, cfg.classifier.monitor)
    confusion = ConfusionMatrixLogger()
    # The training loader is rebuilt each epoch (make_trainer): online synthetic images
    # are drawn anew then.
    callbacks = [best, confusion, *training_callbacks(cfg.classifier)]
    trainer = make_trainer(cfg, "classifier", label, log_root / label, callbacks)
    n_train = sum(dm.plan.total.values())
    checkpoint, fit = fit_keeping_best(trainer, model, dm, best, n_train, cfg.classifier.batch_size)
    best_model = load_classifier(checkpoint)
    scorer = evaluator(cfg, "classifier", label, trainer, [confusion])
    tested, probs, grades = test_scores(scorer, best_model, dm)
    # all test images, in order; a prefix of them under fast_dev_run or limit_test_batches
    test_ids = [dm.cache.records[i].image_id for i in dm.indices("test")[: len(grades)]]
    write_predictions(predictions, test_ids, probs, grades)
    validated = scorer.validate(best_model, datamodule=dm, verbose=False)[0]
    info = {
        "metrics": rounded({k: v for k, v in tested.items() if k != "test/loss"}),
        "val_metrics": rounded(validated),
        "test_loss": round(float(tested["test/loss"]), 4),
        "confusion_matrix": best_model.last_confusion["test"].tolist(),
        **fit,
    }
    if pairs is not None:
        info["fellow_eye"] = {"weight": best_model.fellow_weight, "n_paired": pairs}
    return checkpoint, info


def run_classifier_stage(
    cfg: DictConfig,
    data: PreparedData,
    plan: RebalancePlan,
    synthetic: Callable[[], SyntheticSource] | None,
    synthetic_key: str | None,
    store: StageStore,
    log_root: Path,
    label: str = "classifier",
) -> StageResult:
    """Train (or reuse) the classifier for this data, rebalancing, config and seed, logging
    as `label`. `synthetic()` supplies the synthetic images; it is called only when the stage
    is built."""

    key = classifier_key(cfg, data, plan, synthetic_key)

    def build(tmp: Path) -> dict[str, Any]:
        L.seed_everything(cfg.seed, workers=True)
        model = build_classifier(cfg, data.image_size, plan.class_weights)
        dm = _datamodule(cfg, data, plan, synthetic() if synthetic else None)
        checkpoint, info = _train_and_test(
            cfg, dm, model, store.scratch("classifier", key), log_root, label, tmp / PREDICTIONS
        )
        shutil.copyfile(checkpoint, tmp / CLASSIFIER)
        return info

    result = store.run("classifier", key, build)
    result.info = {"path": str(result.path / CLASSIFIER), **result.info}
    if (result.path / PREDICTIONS).is_file():  # absent from stages built before drvae 0.1.1
        result.info["predictions"] = str(result.path / PREDICTIONS)
    return result
