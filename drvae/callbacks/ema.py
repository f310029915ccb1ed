"""EMA of the weights with a warm-up, on Lightning's weight-averaging callback.

A fixed decay (0.995) over a short CPU training keeps the random initial weights in the
average for hundreds of steps: after one 22-step epoch they still weigh 0.9. The warm-up of
timm's ModelEmaV3 and TensorFlow's ExponentialMovingAverage (num_updates) fixes that: the
decay at update n is min(decay, (1 + n) / (10 + n)), so the early average follows the model.
"""

from __future__ import annotations

from collections.abc import Callable

from lightning.pytorch.callbacks import EMAWeightAveraging
from torch import Tensor


def warmup_ema(decay: float) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
    """An `AveragedModel` avg_fn: the EMA update with the warmed-up decay."""

    def average(averaged: Tensor, current: Tensor, num_averaged: Tensor) -> Tensor:
        n = float(num_averaged)
        d = min(decay, (1 + n) / (10 + n))
        return averaged + (current - averaged) * (1 - d)

    return average


class WarmupEMA(EMAWeightAveraging):
    """`EMAWeightAveraging` whose decay warms up to `decay` (see the module docstring); the
    averaged weights are the ones validated, checkpointed and tested."""

    def __init__(self, decay: float = 0.999) -> None:
        super().__init__(decay=decay)
        self._kwargs["avg_fn"] = warmup_ema(decay)
