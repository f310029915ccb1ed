"""Stage `vae`: train the class-conditional VAE on the TRAIN split (val for monitoring).

With `vae.model.num_classes: 0`, one unconditional VAE is trained per grade on that grade's
images (the paper's reading); otherwise one VAE conditioned on the grade. The stage folder
holds `vae.ckpt` (or `vae_grade<g>.ckpt`), the best checkpoint by `vae.monitor`.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig

from drvae.config import plain
from drvae.data.dataset import FundusDataModule
from drvae.data.records import NUM_GRADES, DataError
from drvae.models.checkpoints import load_vae
from drvae.models.vae import ConditionalVAE
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
from drvae.run_folder import vae_files


def vae_key(cfg: DictConfig, data: PreparedData) -> str:
    v = cfg.vae
    return config_key(
        "vae",
        data.key,
        cfg.seed,
        v.model,
        v.optimizer,
        v.scheduler,
        v.batch_size,
        v.monitor,
        trainer_key_material(cfg, "vae"),
        # only when set, so that the keys of VAEs trained on every image stay as they were
        *([{"train_per_grade": v.train_per_grade}] if v.get("train_per_grade") else []),
        *([{"sampler": v.sampler}] if v.get("sampler", "shuffle") != "shuffle" else []),
    )


def build_vae(cfg: DictConfig, image_size: int) -> ConditionalVAE:
    """The VAE the config describes (before training)."""
    v = cfg.vae
    return ConditionalVAE(
        image_size=image_size,
        **plain(v.model),
        optimizer=plain(v.optimizer),
        scheduler=plain(v.scheduler),
    )


def _groups(cfg: DictConfig, data: PreparedData) -> dict[str, list[int] | None]:
    """Checkpoint name -> the grades its VAE trains on (None: all, conditioned)."""
    if cfg.vae.model.num_classes:
        return vae_files(per_grade=False)
    train = data.per_grade()["train"]
    empty = [g for g in range(NUM_GRADES) if not train[g]]
    if empty:
        raise DataError(
            f"vae.model.num_classes=0 trains one VAE per grade, but grade(s) "
            f"{empty} have no training images"
        )
    return vae_files(per_grade=True)


def _fit_one(
    cfg: DictConfig, data: PreparedData, grades: list[int] | None, scratch: Path, log_root: Path
) -> tuple[Path, dict[str, Any]]:
    """Train one VAE (resuming from `scratch`); returns its best checkpoint and the fit."""
    label = "vae" if grades is None else f"vae_grade{grades[0]}"
    model = build_vae(cfg, data.image_size)
    dm = FundusDataModule(
        data.cache,
        data.splits,
        cfg.vae.batch_size,
        cfg.data.num_workers,
        grades=grades,
        train_per_grade=(n, cfg.seed) if (n := cfg.vae.get("train_per_grade")) else None,
        sampler=cfg.vae.get("sampler", "shuffle"),
    )
    best = best_checkpoint(scratch / label, cfg.vae.monitor)
    callbacks: list[L.Callback] = [best]
    if cfg.vae.get("images"):
        callbacks.append(instantiate(cfg.vae.images))
    trainer = make_trainer(cfg, "vae", label, log_root / label, callbacks)
    n_train = len(dm.dataset("train"))
    checkpoint, fit = fit_keeping_best(trainer, model, dm, best, n_train, cfg.vae.batch_size)
    scorer = evaluator(cfg, "vae", label, trainer, [])
    validated = scorer.validate(load_vae(checkpoint), datamodule=dm, verbose=False)
    return checkpoint, {"metrics": rounded((validated or [{}])[0]), **fit}


def run_vae_stage(
    cfg: DictConfig, data: PreparedData, store: StageStore, log_root: Path
) -> StageResult:
    """Train (or reuse) the VAE(s) for this data, config and seed."""
    groups, key = _groups(cfg, data), vae_key(cfg, data)
    scratch = store.scratch("vae", key)

    def build(tmp: Path) -> dict[str, Any]:
        L.seed_everything(cfg.seed, workers=True)
        fits = {}
        for name, grades in groups.items():
            checkpoint, fit = _fit_one(cfg, data, grades, scratch, log_root)
            shutil.copyfile(checkpoint, tmp / name)
            fits[name] = fit
        return {"checkpoints": list(groups), "fits": fits}

    result = store.run("vae", key, build)
    result.info = _summary(result.path, result.info["fits"])
    return result


def _summary(folder: Path, fits: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """What results.json says about the VAE(s): one conditional VAE, or one per grade."""
    if len(fits) == 1:
        ((name, fit),) = fits.items()
        return {"path": str(folder / name), "checkpoints": {name: str(folder / name)}, **fit}
    return {
        "path": str(folder),
        "checkpoints": {name: str(folder / name) for name in fits},
        "metrics": {name: fit["metrics"] for name, fit in fits.items()},
        "fits": fits,
    }
