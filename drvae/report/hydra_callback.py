"""A Hydra callback that writes and prints the comparison report when a multirun ends, and
fails the command (exit 1) when a job failed, so that scripts see it."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class PrintComparison(Callback):
    """After `drvae -m ...`: the report of `drvae-report` on the sweep folder, then the
    failed and unfinished jobs (a job that fails writes failed.json; the sweep goes on)."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from drvae.report.collect import collect
        from drvae.report.table import write_report

        folder = Path(config.hydra.sweep.dir)
        try:
            text, written = write_report(folder)
            print(f"\ndrvae: {folder}\n{text}\nwritten: " + ", ".join(p.name for p in written))
        except Exception as error:  # the jobs' results stand without their report
            print(f"drvae: the report failed: {type(error).__name__}: {error}", file=sys.stderr)
        try:
            jobs = collect(folder)
        except Exception:  # no folder: nothing ran, nothing to list
            return
        unfinished = [str(j.folder) for j in jobs if j.results is None]
        if unfinished:
            print(
                f"drvae: {len(unfinished)} of {len(jobs)} jobs failed: {', '.join(unfinished)}",
                file=sys.stderr,
            )
            sys.exit(1)
