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
import traceback
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from drvae.atomic import write_json
from drvae.errors import ConfigError
from drvae.run_folder import FAILED
from drvae.secrets import redact, redact_hydra_files


def disk_hint(folder: str) -> str:
    """What to say about the disk holding `folder` when a write failed."""
    try:
        free = shutil.disk_usage(Path(folder).expanduser().parent).free
    except OSError:
        return ""
    full = f"; the disk holding {folder} has {free / 2**20:.0f} MiB free" if free < 2**30 else ""
    return f"{full}. Nothing half-written was kept (HYDRA_FULL_ERROR=1 shows the trace)"


def record_failure(folder: Path, error: BaseException) -> None:
    """Write why the job failed into its folder, for the report and the user."""
    folder.mkdir(parents=True, exist_ok=True)
    write_json(
        folder / FAILED,
        {
            "error": redact(str(error)),
            "type": type(error).__name__,
            "traceback": redact(traceback.format_exc()),
        },
    )


def objective(cfg: DictConfig, results: dict[str, Any]) -> float | None:
    """The value a sweeper optimises (`optimized_metric`): a validation metric of the
    classifier (val/qwk) or of the VAE (vae/val/elbo); never a test metric."""
    name = cfg.get("optimized_metric")
    if not name:
        return None
    from drvae.pipeline.checks import optimized_metric_source  # imports torch: not at start-up

    stage, metric = optimized_metric_source(name)
    values = (
        results["stages"]
        .get(stage, {})
        .get("val_metrics" if stage == "classifier" else "metrics", {})
    )
    if not metric.startswith("val/") or metric not in values:
        known = ", ".join(sorted(values)) or f"none: the {stage} stage did not run"
        raise ConfigError(
            f"optimized_metric: {name!r} is not a validation metric of this run (a search "
            f"never looks at the test split); known: {known}"
        )
    return float(values[metric])


@hydra.main(version_base="1.3", config_path="pkg://drvae.conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    from drvae.pipeline.run import USER_ERRORS, run
    from drvae.tracking import job_run

    hydra_cfg = HydraConfig.get()  # Hydra saved the config and command line before this call
    out = Path(hydra_cfg.runtime.output_dir)
    redact_hydra_files(out)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    if multirun:
        redact_hydra_files(Path(hydra_cfg.sweep.dir))
    sys.argv[1:] = redact(sys.argv[1:])  # what loggers record as the command (W&B does)
    try:
        with job_run(cfg) as tracker:  # one W&B run per job, finished however the job ends
            results = run(cfg)
            tracker.log_results(results)
            return objective(cfg, results)
    except Exception as error:
        record_failure(out, error)
        full_trace = os.environ.get("HYDRA_FULL_ERROR") == "1"
        expected = isinstance(error, (*USER_ERRORS, OSError))
        if (full_trace and not isinstance(error, USER_ERRORS)) or not (expected or multirun):
            raise
        message = redact(str(error))
        if isinstance(error, OSError):  # a full disk, a permission, a vanished file
            message += disk_hint(cfg.paths.cache_dir)
        elif not expected:  # a bug, in a multirun: its trace, then the next job
            traceback.print_exc()
        if multirun:  # the sweep goes on; the report lists this job as failed
            print(f"drvae: error: job {hydra_cfg.job.num} failed: {message}", file=sys.stderr)
            return None
        print(f"drvae: error: {message}", file=sys.stderr)
        sys.exit(2)


def audit() -> None:
    """`drvae-audit audit.synthetic=SET data=... data.root=...`: the audit stage alone, for
    an existing synthetic set (its manifest names the VAE checkpoints it came from)."""
    sys.argv.insert(1, "stages=[audit]")
    main()


if __name__ == "__main__":
    main()
