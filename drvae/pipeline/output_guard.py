"""A Hydra callback that refuses to start in a folder an earlier run or sweep wrote to.

Hydra writes `.hydra/*.yaml` into the run folder before drvae's code runs, so with a fixed
`hydra.run.dir` (or `hydra.sweep.dir`) a second launch would overwrite the first one's saved
config, logs and results. drvae's default folders are timestamped to the microsecond and
never collide; this guard makes a fixed folder safe too. Finished stages are reused from
the stage store whatever folder a run writes to, so a new folder costs nothing.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

# All that a sweep leaves when no job started (an override that does not compose, such as a
# misspelt key): nothing to keep, and refusing it would block the corrected relaunch.
NEVER_STARTED = {"multirun.yaml"}


def _refuse_used(folder: Path, key: str) -> None:
    if folder.is_dir() and {p.name for p in folder.iterdir()} - NEVER_STARTED:
        print(
            f"drvae: error: {folder} holds an earlier run's outputs, which are never "
            f"overwritten; choose another {key} (finished stages are reused from the cache)",
            file=sys.stderr,
        )
        sys.exit(2)


class NeverOverwrite(Callback):
    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        _refuse_used(Path(config.hydra.run.dir), "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _refuse_used(Path(config.hydra.sweep.dir), "hydra.sweep.dir")
