"""Checks run before any work: a bad config value or checkpoint fails in the first second,
naming the config key, not after an hour of training."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from omegaconf import DictConfig

from drvae.data.records import NUM_GRADES
from drvae.models.vae_checkpoint import CheckpointError, check_vae_fits
from drvae.pipeline.errors import ConfigError
from drvae.pipeline.generate_stage import per_grade_counts
from drvae.pipeline.store import plain
from drvae.pipeline.vae_stage import build_vae

STAGES = ("vae", "generate")  # in the order they run


def checked_stages(cfg: DictConfig) -> list[str]:
    stages = [str(s) for s in plain(cfg.stages)]
    unknown = [s for s in stages if s not in STAGES]
    if unknown or not stages:
        raise ConfigError(
            f"stages: unknown or empty {unknown or stages}; expected some of {STAGES}"
        )
    return [s for s in STAGES if s in stages]


def user_checkpoints(cfg: DictConfig) -> dict[int, Path] | None:
    """`generate.checkpoint` as grade -> path: one conditional VAE, or a mapping per grade."""
    value = plain(cfg.generate.get("checkpoint"))
    if not value:
        return None
    grades = list(per_grade_counts(cfg.generate.per_grade))
    if isinstance(value, Mapping):
        missing = [g for g in grades if g not in {int(k) for k in value}]
        if missing:
            raise ConfigError(f"generate.checkpoint: no checkpoint for grade(s) {missing}")
        paths = {g: Path(value[g] if g in value else value[str(g)]) for g in grades}
        for grade, path in paths.items():
            check_vae_fits(path, cfg.data.image_size, [grade])
        return paths
    path = Path(value)
    hparams = check_vae_fits(path, cfg.data.image_size, grades)
    if hparams["num_classes"] not in (0, NUM_GRADES):
        raise CheckpointError(
            f"{path}: the VAE was trained on {hparams['num_classes']} grades; the data has "
            f"{NUM_GRADES}"
        )
    if hparams["num_classes"] == 0 and len(grades) > 1:
        raise ConfigError(
            f"generate.checkpoint: {path} is an unconditional VAE (one grade); give a "
            f"mapping grade -> checkpoint for grades {grades}"
        )
    return dict.fromkeys(grades, path)


def check_config(cfg: DictConfig) -> tuple[list[str], dict[int, Path] | None]:
    """Validate what the chosen stages will use. Returns the stages in running order, and
    the user's checkpoints for generate (grade -> path), if `generate.checkpoint` names any."""
    stages = checked_stages(cfg)
    checkpoints = None
    if "vae" in stages:
        try:
            build_vae(cfg, cfg.data.image_size)
        except (TypeError, ValueError) as error:
            raise ConfigError(f"vae.model: {error}") from None
    if "generate" in stages:
        per_grade_counts(cfg.generate.per_grade)
        if cfg.generate.temperature <= 0:
            raise ConfigError(f"generate.temperature must be > 0, got {cfg.generate.temperature}")
        if cfg.generate.batch_size <= 0:
            raise ConfigError(f"generate.batch_size must be > 0, got {cfg.generate.batch_size}")
        checkpoints = user_checkpoints(cfg)
    return stages, checkpoints
