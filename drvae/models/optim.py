"""Optimisers and schedulers from `_partial_` config dictionaries (what `save_hyperparameters`
can hold), for any LightningModule's `configure_optimizers`."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from hydra.utils import instantiate
from torch import nn


def configure_optimizers(
    parameters: Iterable[nn.Parameter],
    optimizer: dict[str, Any],
    scheduler: dict[str, Any] | None,
    monitor: str,
) -> Any:
    """What Lightning's `configure_optimizers` returns; the scheduler watches `monitor`."""
    built = instantiate(optimizer)(parameters)
    if not scheduler:
        return built
    lr_scheduler = {"scheduler": instantiate(scheduler)(built), "monitor": monitor}
    return {"optimizer": built, "lr_scheduler": lr_scheduler}
