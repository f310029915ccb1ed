"""Checks run before any work: a bad config value or checkpoint fails in the first second,
naming the config key, not after an hour of training."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from omegaconf import DictConfig

from drvae.config import plain
from drvae.data.dataset import balance_power
from drvae.data.rebalance import IMBLEARN_STRATEGIES, added_per_grade, checked_methods
from drvae.data.records import NUM_GRADES
from drvae.errors import ConfigError
from drvae.models.checkpoints import CheckpointError, check_vae_fits
from drvae.pipeline.classifier_stage import build_classifier, sampler_balance
from drvae.pipeline.generate_stage import per_grade_counts
from drvae.pipeline.sampler_stage import generate_device, sampler_config
from drvae.pipeline.training import stage_trainer
from drvae.pipeline.vae_stage import build_vae
from drvae.run_folder import STAGES

JUDGED = ("fidelity", "audit")  # the stages that grade synthetic images with a classifier
SYNTHETIC_SOURCES = ("generated", "online")
AUDIT_COUNTS = (  # `audit` settings that must be positive integers
    "per_grade",
    "fidelity_grid",
    "batch_size",
    "bootstrap",
    "nearest_k",
    "kid_subset_size",
    "kid_subsets",
)


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
    per_grade = cfg.generate.get("per_grade")
    grades = list(per_grade_counts(per_grade) if per_grade is not None else range(NUM_GRADES))
    if isinstance(value, Mapping):
        paths = {int(g): Path(p) for g, p in value.items()}
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
    if hparams["num_classes"] == 0:
        raise ConfigError(
            f"generate.checkpoint: {path} is an unconditional VAE (one grade); give a "
            "mapping grade -> checkpoint"
        )
    return dict.fromkeys(grades, path)


def _check_generate(cfg: DictConfig) -> None:
    if cfg.generate.get("per_grade") is not None:
        per_grade_counts(cfg.generate.per_grade)
    if cfg.generate.temperature <= 0:
        raise ConfigError(f"generate.temperature must be > 0, got {cfg.generate.temperature}")
    generate_device(cfg.generate)
    sampler_config(cfg.generate)
    if cfg.generate.batch_size <= 0:
        raise ConfigError(f"generate.batch_size must be > 0, got {cfg.generate.batch_size}")


def _check_confidence(r: DictConfig) -> None:
    if not 0 < r.min_confidence <= 1:
        raise ConfigError(f"rebalance.min_confidence: expected 0 < p <= 1, got {r.min_confidence}")
    if r.synthetic_source == "online":
        raise ConfigError("rebalance.min_confidence filters a written set, not online images")
    if not isinstance(r.max_generated, int) or r.max_generated < 2:
        raise ConfigError(f"rebalance.max_generated: expected an int >= 2, got {r.max_generated!r}")


def _check_rebalance(cfg: DictConfig, stages: list[str]) -> None:
    """The rebalancing config's form; counts against real data are checked once it is read."""
    r = cfg.rebalance
    methods = checked_methods(plain(r.methods))
    written = "synthetic" in methods and r.synthetic_source == "generated"
    if written and "classifier" in stages and "generate" not in stages:
        raise ConfigError(
            "stages: synthetic images from a written set need generate in stages "
            "(or rebalance.synthetic_source=online)"
        )
    if r.synthetic_source not in SYNTHETIC_SOURCES:
        raise ConfigError(
            f"rebalance.synthetic_source: expected one of {SYNTHETIC_SOURCES}, "
            f"got {r.synthetic_source!r}"
        )
    if r.get("min_confidence") is not None:
        _check_confidence(r)
    per_grade = plain(r.per_grade)
    if per_grade not in IMBLEARN_STRATEGIES:  # its form; real counts are checked later
        added_per_grade(per_grade, dict.fromkeys(range(NUM_GRADES), 0), r.count_as)


def _check_classifier(cfg: DictConfig) -> None:
    try:
        build_classifier(cfg, cfg.data.image_size)
    except ConfigError:
        raise
    except (TypeError, ValueError, RuntimeError) as error:
        raise ConfigError(f"classifier: {error}") from None
    if cfg.classifier.batch_size <= 0:
        raise ConfigError(f"classifier.batch_size must be > 0, got {cfg.classifier.batch_size}")
    start, end = sampler_balance(cfg.classifier)
    epochs = stage_trainer(cfg, "classifier").get("max_epochs")
    try:
        balance_power(start, end, 0, epochs if epochs is not None else -1)
    except ValueError as error:
        raise ConfigError(str(error)) from None


def _check_audit(cfg: DictConfig) -> None:
    a = cfg.audit
    for key in AUDIT_COUNTS:
        if not isinstance(a[key], int) or a[key] < 1:
            raise ConfigError(f"audit.{key} must be a positive integer, got {a[key]!r}")
    if a.synthetic and not Path(a.synthetic, "manifest.json").is_file():
        raise ConfigError(
            f"audit.synthetic: {a.synthetic} is not a finished synthetic set (no manifest.json)"
        )


def check_config(cfg: DictConfig) -> tuple[list[str], dict[int, Path] | None]:
    """Validate what the chosen stages will use. Returns the stages in running order, and
    the user's checkpoints for generate (grade -> path), if `generate.checkpoint` names any."""
    stages = checked_stages(cfg)
    _check_rebalance(cfg, stages)
    if "vae" in stages:
        try:
            build_vae(cfg, cfg.data.image_size)
        except (TypeError, ValueError) as error:
            raise ConfigError(f"vae.model: {error}") from None
    judged = any(s in stages for s in JUDGED)  # these may generate and train the judge
    if "generate" in stages or "classifier" in stages or judged:
        _check_generate(cfg)
    if "classifier" in stages or judged:
        _check_classifier(cfg)
    if judged:
        _check_audit(cfg)
    _check_optimized_metric(cfg, stages)
    return stages, user_checkpoints(cfg)


def optimized_metric_source(name: str) -> tuple[str, str]:
    """(stage, metric) of an `optimized_metric`: `vae/val/elbo` is the VAE's, any other the
    classifier's (val/qwk)."""
    return ("vae", name.removeprefix("vae/")) if name.startswith("vae/") else ("classifier", name)


def _check_optimized_metric(cfg: DictConfig, stages: list[str]) -> None:
    """A search optimises a validation metric of a stage the job runs, never a test one."""
    name = cfg.get("optimized_metric")
    if not name:
        return
    stage, metric = optimized_metric_source(name)
    if not metric.startswith("val/") or stage not in stages:
        raise ConfigError(
            f"optimized_metric: expected a validation metric of a stage this job runs "
            f"(val/qwk, val/macro_f1, vae/val/elbo, ...), got {name!r}; a search never "
            "looks at the test split"
        )
