"""Optimisers and schedulers from `_partial_` config dictionaries (what `save_hyperparameters`
can hold), for any LightningModule's `configure_optimizers`."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

from hydra.utils import instantiate
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


class WarmupCosine(LambdaLR):
    """Linear warm-up over the first `warmup_fraction` of the steps, then a cosine decay to
    `min_lr_ratio` x the base rate at the last step; stepped after every optimiser step.

    The training length comes from the Trainer (`total_steps`), so the schedule follows
    `max_epochs` and the training set's size without being set twice."""

    per_step = True  # configure_optimizers passes total_steps and steps it every batch

    def __init__(
        self,
        optimizer: Optimizer,
        total_steps: int,
        warmup_fraction: float = 0.05,
        min_lr_ratio: float = 0.01,
    ) -> None:
        warmup = max(1, round(warmup_fraction * total_steps))
        decay = max(1, total_steps - warmup)

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            progress = min(1.0, (step - warmup) / decay)
            return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

        super().__init__(optimizer, factor)


def configure_optimizers(
    parameters: Iterable[nn.Parameter],
    optimizer: dict[str, Any],
    scheduler: dict[str, Any] | None,
    monitor: str,
    total_steps: Callable[[], int] | None = None,
) -> Any:
    """What Lightning's `configure_optimizers` returns; the scheduler watches `monitor`, or,
    for a per-step schedule (WarmupCosine), is given `total_steps()` and stepped each batch."""
    built = instantiate(optimizer)(parameters)
    if not scheduler:
        return built
    factory = instantiate(scheduler)
    if getattr(getattr(factory, "func", factory), "per_step", False):
        if total_steps is None:
            raise ValueError(f"{scheduler['_target_']} needs the number of training steps")
        schedule = {"scheduler": factory(built, total_steps=total_steps()), "interval": "step"}
        return {"optimizer": built, "lr_scheduler": schedule}
    lr_scheduler = {"scheduler": factory(built), "monitor": monitor}
    return {"optimizer": built, "lr_scheduler": lr_scheduler}
