"""`drvae`: the Hydra entry point. It composes the config and hands it to `run`.

    drvae stages=[vae,generate] data=simulated data.n_images=300 data.image_size=32 \\
        trainer.max_epochs=1 generate.per_grade=4 seed=1 paths.cache_dir=DIR

The heavy imports (torch, Lightning) happen inside `main`: image worker processes import
this module again, and should not pay for them.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from drvae.secrets import redact, redact_hydra_files


def disk_hint(folder: str) -> str:
    """What to say about the disk holding `folder` when a write failed."""
    try:
        free = shutil.disk_usage(Path(folder).expanduser().parent).free
    except OSError:
        return ""
    full = f"; the disk holding {folder} has {free / 2**20:.0f} MiB free" if free < 2**30 else ""
    return f"{full}. Nothing half-written was kept (HYDRA_FULL_ERROR=1 shows the trace)"


@hydra.main(version_base="1.3", config_path="pkg://drvae.conf", config_name="config")
def main(cfg: DictConfig) -> None:
    from drvae.pipeline.run import USER_ERRORS, run

    hydra_cfg = HydraConfig.get()  # Hydra saved the config and command line before this call
    redact_hydra_files(Path(hydra_cfg.runtime.output_dir))
    if hydra_cfg.mode == RunMode.MULTIRUN:
        redact_hydra_files(Path(hydra_cfg.sweep.dir))
    sys.argv[1:] = redact(sys.argv[1:])  # what loggers record as the command (W&B does)
    try:
        run(cfg)
    except USER_ERRORS as error:
        print(f"drvae: error: {error}", file=sys.stderr)
        sys.exit(2)
    except OSError as error:  # a full disk, a permission, a vanished file: one clear line
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"drvae: error: {error}{disk_hint(cfg.paths.cache_dir)}", file=sys.stderr)
        sys.exit(2)
    finally:
        if "wandb" in sys.modules:  # one W&B run per job, closed even when the job fails
            sys.modules["wandb"].finish()


def audit() -> None:
    """`drvae-audit audit.synthetic=SET data=... data.root=...`: the audit stage alone, for
    an existing synthetic set (its manifest names the VAE checkpoints it came from)."""
    sys.argv.insert(1, "stages=[audit]")
    main()


if __name__ == "__main__":
    main()
