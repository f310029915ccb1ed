"""Build a Lightning Trainer for a stage from the `trainer` and `logger` config groups."""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig, OmegaConf

from drvae.atomic import write_json
from drvae.callbacks.safeguards import RandomState, StopOnNonFiniteLoss
from drvae.tracking import is_wandb, stage_logger

# Trainer arguments that change how a run is shown, not what it computes: left out of keys.
PRESENTATION_KEYS = frozenset(
    {"enable_progress_bar", "enable_model_summary", "log_every_n_steps", "default_root_dir"}
)


def stage_trainer(cfg: DictConfig, stage: str) -> DictConfig:
    """The `trainer` group with the stage's own overrides merged over it:
    `classifier.trainer.max_epochs=40` changes the classifier's epochs, not the VAE's."""
    overrides = {k: v for k, v in (cfg[stage].get("trainer") or {}).items() if v is not None}
    trainer = OmegaConf.merge(cfg.trainer, {})
    OmegaConf.set_struct(trainer, False)  # a Trainer argument the group does not list
    return OmegaConf.merge(trainer, overrides)


# Callbacks of the `callbacks` group that only report: left out of stage keys. The first two
# need a logger, and are left out when there is none.
REPORTING_CALLBACKS = frozenset({"LearningRateMonitor", "DeviceStatsMonitor"})
PRESENTATION_CALLBACKS = REPORTING_CALLBACKS | {
    "RichProgressBar",
    "TQDMProgressBar",
    "RichModelSummary",
    "ModelSummary",
}


def _callback_nodes(cfg: DictConfig) -> dict[str, DictConfig]:
    return {n: c for n, c in (cfg.get("callbacks") or {}).items() if c and "_target_" in c}


def _class_name(node: DictConfig) -> str:
    return str(node._target_).rsplit(".", 1)[-1]


def trainer_key_material(cfg: DictConfig, stage: str) -> dict[str, Any]:
    """The stage's trainer settings and callbacks that determine its output (for its key)."""
    trainer = stage_trainer(cfg, stage)
    material = {k: v for k, v in trainer.items() if k not in PRESENTATION_KEYS}
    callbacks = {
        name: OmegaConf.to_container(node, resolve=True)
        for name, node in _callback_nodes(cfg).items()
        if _class_name(node) not in PRESENTATION_CALLBACKS
    }
    if callbacks:  # only then: the keys of stages trained without any stay as they were
        material["callbacks"] = callbacks
    return material


def extra_callbacks(cfg: DictConfig, stage: str, logged: bool) -> list[L.Callback]:
    """The `callbacks` group's callbacks for a `stage` Trainer; one with `monitor: null`
    watches the stage's own monitor (vae.monitor, classifier.monitor) in its direction."""
    callbacks = []
    for node in _callback_nodes(cfg).values():
        if not logged and _class_name(node) in REPORTING_CALLBACKS:
            continue
        watch = {}
        if "monitor" in node and node.monitor is None:
            monitor = cfg[stage].monitor
            watch = {"monitor": monitor, "mode": monitor_mode(monitor)}
        callbacks.append(instantiate(node, **watch))
    return callbacks


def make_loggers(logger_cfg: DictConfig | None, stage: str) -> list[Logger]:
    """One logger per entry of the `logger` group, each keeping this stage's log apart: a
    folder of its own, or its own keys in the job's W&B run (drvae.tracking)."""
    loggers: list[Logger] = []
    for node in (logger_cfg or {}).values():
        if not node or "_target_" not in node:
            continue
        if is_wandb(node):
            loggers.append(stage_logger(node, stage))
        else:
            loggers.append(instantiate(node, version=stage))
    return loggers


def monitor_mode(metric: str) -> str:
    """ "min" for losses and their terms, "max" for scores (ELBO, kappa, accuracy, ...)."""
    return "min" if metric.endswith(("loss", "recon", "recon_gap", "kl", "bpd")) else "max"


def make_trainer(
    cfg: DictConfig,
    stage: str,
    label: str,
    root: Path,
    callbacks: list[L.Callback],
    **overrides: Any,
) -> L.Trainer:
    """A Trainer for `stage` (vae, classifier), logging under `root` as `label`. It stops at
    a non-finite loss, keeps the random state in its checkpoints, and rebuilds the training
    loader each epoch (seeded by the epoch): a resumed fit continues exactly."""
    loggers = make_loggers(cfg.get("logger"), label)
    return instantiate(
        stage_trainer(cfg, stage),
        default_root_dir=str(root),
        logger=loggers or False,
        callbacks=[
            *callbacks,
            *extra_callbacks(cfg, stage, bool(loggers)),
            StopOnNonFiniteLoss(label, stage),
            RandomState(),
        ],
        **{"reload_dataloaders_every_n_epochs": 1, **overrides},
    )


PROGRESS = "progress.json"
LAST = "last.ckpt"


class BestCheckpoint(ModelCheckpoint):
    """Keeps the best weights by `monitor` as `<dirpath>/best-epoch=<e>.ckpt` and the latest
    full training state as `<dirpath>/last.ckpt` (to resume from), and writes the fit's
    progress (epochs, optimiser steps) to `<dirpath>/progress.json`: under DDP in spawned
    processes, this process's Trainer never sees the loop counters."""

    trained_this_epoch = False

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        super().on_train_batch_end(trainer, *args, **kwargs)
        self.trained_this_epoch = True

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.trained_this_epoch:
            return  # a resumed fit closing its checkpoint's epoch: nothing new to keep
        self.trained_this_epoch = False
        super().on_train_epoch_end(trainer, pl_module)  # the best, updated first
        if not trainer.fast_dev_run:  # every epoch, not only when the best improves
            trainer.save_checkpoint(Path(self.dirpath) / LAST, weights_only=False)  # atomic

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        if trainer.is_global_zero:
            progress = {"epochs": trainer.current_epoch, "steps": trainer.global_step}
            Path(self.dirpath).mkdir(parents=True, exist_ok=True)
            write_json(Path(self.dirpath) / PROGRESS, progress)


def best_checkpoint(folder: Path, monitor: str) -> BestCheckpoint:
    return BestCheckpoint(
        dirpath=folder,
        filename="best-{epoch}",
        monitor=monitor,
        mode=monitor_mode(monitor),
    )


def resume_point(best: BestCheckpoint) -> tuple[Path | None, dict[str, int]]:
    """The `last.ckpt` an interrupted fit left in `best`'s folder, and the epochs and steps
    it had done; (None, zeros) when there is none or it cannot be read, after removing any
    other checkpoint there (a fresh start trusts nothing a failed fit wrote)."""
    folder = Path(best.dirpath)
    last, done = folder / LAST, {"epochs": 0, "steps": 0}
    try:
        checkpoint = torch.load(last, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        checkpoint = None
    except Exception as error:  # torch raises several types for a damaged file
        print(f"drvae: {last} is unreadable ({error}); training from the start", file=sys.stderr)
        checkpoint = None
    if checkpoint is None:
        for stale in folder.glob("*.ckpt"):
            stale.unlink()
        return None, done
    # Saved at the end of the epoch, after its validation.
    done = {"epochs": checkpoint["epoch"] + 1, "steps": checkpoint["global_step"]}
    print(f"drvae: resuming from {last} after {done['epochs']} epoch(s)")
    return last, done


def fit_keeping_best(
    trainer: L.Trainer,
    model: L.LightningModule,
    datamodule: L.LightningDataModule,
    best: BestCheckpoint,
    n_train: int,
    batch_size: int,
) -> tuple[Path, dict[str, Any]]:
    """Fit, resuming from the checkpoint an interrupted fit left in `best`'s folder; returns
    the best checkpoint (`best`'s, or the last weights when nothing was monitored, e.g. under
    fast_dev_run) and what the fit did."""
    start = time.perf_counter()
    last, resumed = resume_point(best)
    trainer.fit(model, datamodule=datamodule, ckpt_path=last, weights_only=True)
    seconds = time.perf_counter() - start
    progress = json.loads((Path(best.dirpath) / PROGRESS).read_text())
    epochs, steps = progress["epochs"], progress["steps"]
    checkpoint = best.best_model_path
    if not checkpoint:
        checkpoint = str(Path(best.dirpath) / f"last-epoch={max(epochs - 1, 0)}.ckpt")
        trainer.save_checkpoint(checkpoint)
    # Images actually trained on (full batches: the train loader drops the last partial
    # one); under DDP each step trains a batch on every process.
    steps, epochs_run = steps - resumed["steps"], max(epochs - resumed["epochs"], 1)
    trained = min(steps * batch_size * trainer.world_size, n_train * epochs_run)
    return Path(checkpoint), {
        "epochs": epochs,
        "best_epoch": int(re.search(r"epoch=(\d+)", Path(checkpoint).name).group(1)),
        "train_images": n_train,
        "train_images_per_second": round(trained / seconds, 1),
        "resumed_after_epochs": resumed["epochs"] if last else None,
    }


def evaluator(
    cfg: DictConfig, stage: str, label: str, fitted: L.Trainer, callbacks: list[L.Callback]
) -> L.Trainer:
    """The Trainer that validates and tests after `fitted`: itself, or after DDP a
    one-device Trainer in this process, because a DistributedSampler pads a split with
    repeated images (every image must be scored exactly once) and because what spawned
    processes compute never reaches this one. It logs as `<label>_eval`: the training logs
    were written by the spawned processes, and a logger here would start them afresh."""
    if fitted.world_size == 1 and fitted.strategy.launcher is None:
        return fitted
    one = {"devices": 1, "num_nodes": 1, "strategy": "auto"}
    return make_trainer(
        cfg, stage, f"{label}_eval", Path(fitted.default_root_dir), callbacks, **one
    )


def rounded(metrics: dict[str, Any], digits: int = 4) -> dict[str, float]:
    return {k: round(float(v), digits) for k, v in metrics.items()}
