"""Run the configured stages in order and write the run's `results.json`."""

from __future__ import annotations

import importlib.metadata
import time
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from drvae.atomic import write_json
from drvae.data.records import NUM_GRADES, DataError
from drvae.models.vae_checkpoint import CheckpointError
from drvae.pipeline.checks import check_config
from drvae.pipeline.data import PreparedData, prepare_data
from drvae.pipeline.errors import ConfigError
from drvae.pipeline.generate_stage import run_generate_stage
from drvae.pipeline.store import StageStore, plain
from drvae.pipeline.vae_stage import run_vae_stage, vae_key

RESULTS = "results.json"
USER_ERRORS = (DataError, ConfigError, CheckpointError)
PACKAGES = ("drvae", "torch", "torchvision", "lightning", "hydra-core", "timm", "torchmetrics")


def versions() -> dict[str, str]:
    return {name: importlib.metadata.version(name) for name in PACKAGES}


def _vae_checkpoints(vae_info: dict[str, Any]) -> dict[int, Path]:
    """Grade -> checkpoint that the generate stage draws that grade from."""
    paths = {name: Path(p) for name, p in vae_info["checkpoints"].items()}
    if "vae.ckpt" in paths:
        return dict.fromkeys(range(NUM_GRADES), paths["vae.ckpt"])
    return {g: paths[f"vae_grade{g}.ckpt"] for g in range(NUM_GRADES)}


def _finished_vae(cfg: DictConfig, store: StageStore, data: PreparedData) -> dict[str, Any]:
    """The VAE for generate when the vae stage is not in `stages`: it must be in the store."""
    key = vae_key(cfg, data)
    record = store.finished("vae", key)
    if record is None:
        raise ConfigError(
            "stages: generate needs a VAE; add vae to stages or set generate.checkpoint=PATH"
        )
    folder = store.folder("vae", key)
    return {"checkpoints": {n: str(folder / n) for n in record["info"]["checkpoints"]}}


def command_overrides() -> list[str]:
    """The overrides the user typed (empty when run outside a Hydra app, e.g. in tests)."""
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def run(cfg: DictConfig) -> dict[str, Any]:
    """Run the configured stages; returns (and writes) the run's results."""
    out = Path(cfg.paths.output_dir)
    if (out / RESULTS).exists():
        raise ConfigError(f"{out / RESULTS} exists: an earlier run's output is never overwritten")
    stages, checkpoints = check_config(cfg)
    start = time.perf_counter()
    store = StageStore(cfg.paths.cache_dir)
    data = prepare_data(cfg.data, store)
    results: dict[str, Any] = {
        "data": {"key": data.key, "cache": str(data.cache.folder), "counts": data.per_grade()},
        "stages": {},
    }
    vae_info = None
    if "vae" in stages:
        vae = run_vae_stage(cfg, data, store, out / "logs")
        results["stages"]["vae"] = vae.summary()
        vae_info = vae.info
    if "generate" in stages:
        if checkpoints is None:
            checkpoints = _vae_checkpoints(vae_info or _finished_vae(cfg, store, data))
        generated = run_generate_stage(cfg.generate, checkpoints, store)
        results["stages"]["generate"] = generated.summary()
    results.update(
        seconds=round(time.perf_counter() - start, 3),
        overrides=command_overrides(),
        config=plain(cfg),
        versions=versions(),
    )
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / RESULTS, results)
    print(f"drvae: results in {out / RESULTS}")
    return results
