"""Sweep benchmark: what a Hydra multirun over N per-grade synthetic counts costs, against
the trainings it cannot avoid (one VAE, N classifiers), each timed alone.

`sweep_cost_ratio` = the sweep's wall time (one `drvae -m` process: start-up, data, the VAE
once, N generations, N classifiers, reports) / (the VAE stage's seconds + each classifier
stage's seconds, from runs of one stage each). The data cache is built beforehand and
shared; the sweep and the lone runs use different seeds so that nothing else is reused.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

COUNTS = (50, 100, 200, 400)  # per-grade synthetic images, one classifier each


def drvae(work: Path, *overrides: str, multirun: bool = False) -> float:
    """Run the drvae CLI in its own process; returns its wall time in seconds."""
    command = [sys.executable, "-m", "drvae.pipeline.main", *(["-m"] if multirun else [])]
    command += [f"paths.log_dir={work}", *overrides]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - start


def stage_seconds(work: Path, stage: str) -> float:
    """The stage's build time in the newest single run's results.json."""
    newest = max((work / "drvae" / "runs").glob("*/results.json"), key=lambda p: p.stat().st_mtime)
    return json.loads(newest.read_text())["stages"][stage]["seconds"]


def bench_sweep(
    work: Path, n_images: int = 2000, epochs: int = 5, sweeps: tuple[int, ...] = (1, 4)
) -> dict[str, Any]:
    """Wall time of sweeps of 1 and 4 counts on simulated data, and the lone stages' times."""
    common = (
        f"data.n_images={n_images}",
        f"trainer.max_epochs={epochs}",
        "trainer.enable_progress_bar=false",
    )
    n_max = max(sweeps)
    alone_seed = 1000
    drvae(work, *common, "stages=[vae]", f"seed={alone_seed}")  # also builds the data cache
    vae_s = stage_seconds(work, "vae")
    classifier_s = []
    for count in COUNTS[:n_max]:
        drvae(work, *common, f"rebalance.per_grade={count}", f"seed={alone_seed}")
        classifier_s.append(stage_seconds(work, "classifier"))
    figures: dict[str, Any] = {
        "n_images": n_images,
        "epochs": epochs,
        "counts": list(COUNTS[:n_max]),
        "vae_alone_seconds": round(vae_s, 1),
        "classifier_alone_seconds": [round(s, 1) for s in classifier_s],
    }
    for n in sweeps:
        counts = ",".join(str(c) for c in COUNTS[:n])
        wall = drvae(work, *common, f"rebalance.per_grade={counts}", f"seed={n}", multirun=True)
        figures[f"sweep_{n}_wall_seconds"] = round(wall, 1)
        figures[f"sweep_{n}_cost_ratio"] = round(wall / (vae_s + sum(classifier_s[:n])), 3)
    figures["sweep_cost_ratio"] = figures[f"sweep_{n_max}_cost_ratio"]
    return figures
