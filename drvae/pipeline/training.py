"""Build a Lightning Trainer for a stage from the `trainer` and `logger` config groups."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig

# Trainer arguments that change how a run is shown, not what it computes: left out of keys.
PRESENTATION_KEYS = frozenset(
    {"enable_progress_bar", "enable_model_summary", "log_every_n_steps", "default_root_dir"}
)


def trainer_key_material(trainer_cfg: DictConfig) -> dict[str, Any]:
    """The trainer settings that determine a stage's output (for its stage key)."""
    return {k: v for k, v in trainer_cfg.items() if k not in PRESENTATION_KEYS}


def make_loggers(logger_cfg: DictConfig | None, stage: str) -> list[Logger]:
    """One logger per entry of the `logger` group, each keeping this stage's log apart."""
    loggers: list[Logger] = []
    for node in (logger_cfg or {}).values():
        if not node or "_target_" not in node:
            continue
        if node._target_.endswith("WandbLogger"):
            loggers.append(instantiate(node, job_type=stage))
        else:
            loggers.append(instantiate(node, version=stage))
    return loggers


def make_trainer(cfg: DictConfig, stage: str, root: Path, callbacks: list[L.Callback]) -> L.Trainer:
    """A Trainer from `cfg.trainer`, logging this stage under the run directory."""
    return instantiate(
        cfg.trainer,
        default_root_dir=str(root),
        logger=make_loggers(cfg.get("logger"), stage) or False,
        callbacks=callbacks,
    )
