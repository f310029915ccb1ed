"""A Hydra callback that prints the comparison table when a multirun ends."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class PrintComparison(Callback):
    """After `drvae -m ...`: the jobs' test metrics side by side (see `drvae-report`)."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from drvae.report.table import report

        folder = Path(config.hydra.sweep.dir)
        print(f"\ndrvae: {folder}\n{report(folder)}")
