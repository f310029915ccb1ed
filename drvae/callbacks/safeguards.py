"""Callbacks every drvae training gets: stop at the first non-finite loss, and carry the
random-number state in checkpoints so that a resumed fit continues as if never stopped."""

from __future__ import annotations

from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.fabric.utilities.seed import _collect_rng_states, _set_rng_states


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message names the stage, epoch and step."""


class StopOnNonFiniteLoss(L.Callback):
    """Raises `TrainingDiverged` before a non-finite loss is back-propagated, so no weight,
    checkpoint or "best" model from after the fault exists."""

    def __init__(self, label: str, stage: str) -> None:
        self.label, self.stage = label, stage  # what is logged; its config group (vae, ...)

    def on_before_backward(
        self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor
    ) -> None:
        if not torch.isfinite(loss).all():
            raise TrainingDiverged(
                f"{self.label}: the training loss is {loss.item()} at epoch "
                f"{trainer.current_epoch}, step {trainer.global_step}; training stopped and "
                f"nothing after this step was kept. Lower the learning rate, clip gradients "
                f"({self.stage}.trainer.gradient_clip_val=1.0) or check the data"
            )


class RandomState(L.Callback):
    """Saves torch's, numpy's and Python's global random states in each checkpoint and
    restores them when the next epoch starts after a resume: the VAE's sampling noise and
    the loaders' shuffling then continue exactly as in a fit that was never stopped.

    Restoring at that epoch's start, not when the checkpoint is loaded, makes the resumed fit
    independent of what Lightning does (and draws) while it closes the checkpoint's epoch."""

    KEY = "drvae_random_state"

    def __init__(self) -> None:
        self.pending: dict[str, Any] | None = None

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if self.pending is not None:  # resumed, not yet restored: the loaded state stands
            checkpoint[self.KEY] = self.pending
            return
        states = _collect_rng_states(include_cuda=True)
        name, keys, pos, has_gauss, cached = states["numpy"]
        # Plain lists, not an ndarray: checkpoints are read with `weights_only=True`.
        states["numpy"] = [name, keys.tolist(), pos, has_gauss, cached]
        checkpoint[self.KEY] = {"epoch": trainer.current_epoch, "states": states}

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        self.pending = checkpoint.get(self.KEY)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.pending is None or trainer.current_epoch != self.pending["epoch"] + 1:
            return
        states = dict(self.pending["states"])
        name, keys, pos, has_gauss, cached = states["numpy"]
        states["numpy"] = (name, np.asarray(keys, np.uint32), pos, has_gauss, cached)
        cuda = states.pop("torch.cuda", [])
        if torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
            states["torch.cuda"] = cuda  # not when resuming on another kind of machine
        _set_rng_states(states)
        self.pending = None
