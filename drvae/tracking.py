"""One Weights & Biases run per job (`drvae ...`, or one job of `drvae -m ...`).

When the `logger` group has a `WandbLogger` entry, `job_run` opens the job's run before the
first stage and finishes it when the job ends: exit code 0, or 1 when the job failed. Each
stage's logger (`StageWandbLogger`) writes into that run under its label (`vae/`,
`vae_grade3/`, `classifier/`, `audit_tstr/`, `classifier_eval/` after DDP) against its own
step axis (`<label>/step`): the VAE's and the classifier's `train/loss` are separate charts,
each over its own steps (the stages' global steps each start at 0). At the end the run gets
results.json's numbers as its summary, a per-grade table, the test confusion matrix, a grid
of synthetic samples and the synthetic set (an artifact referencing its folder).

How a job's run is named, so that a project of many sweeps stays searchable:
- job_type: the last stage the job runs, in running order (vae, generate, classifier,
  audit), i.e. what the job is for: a rebalancing job is a classifier job although it trains
  the VAE first (and judges its images after: fidelity counts only without the
  classifier), `stages=[vae]` a vae job, `drvae-audit` an audit job.
- group: the sweep, `<task_name>/<sweep folder>`, so that its jobs are compared together; a
  single run's group is `task_name`.
- name: what sets the job apart: in a sweep, its values of the swept keys (`rebalance=none
  seed=1`); in a single run, the typed overrides but `paths.*`, `logger*` and `hydra*`
  (where things go, not what is computed); redacted; else the run folder's name.
- tags: `tags`, the rebalancing methods and the data source.

Offline by default (`logger.wandb.offline=false` goes online): the run lands in
`<run dir>/wandb/offline-run-*`, which `wandb sync` uploads. wandb is imported only when a
run is opened: a job without the W&B logger never loads it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import OverrideParseException
from hydra.types import RunMode
from lightning.fabric.utilities.logger import _convert_params
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from drvae.config import plain
from drvae.report.collect import fidelity_figures
from drvae.run_folder import STAGES
from drvae.secrets import redact

# WandbLogger arguments that are Lightning's, not wandb.init's.
LIGHTNING_ONLY = frozenset(
    {"_target_", "save_dir", "dir", "offline", "log_model", "prefix", "checkpoint_name"}
)
NOT_SETTINGS = ("paths.", "logger", "hydra")  # overrides left out of a single run's name

_open_run: Any = None  # the job's wandb Run while `job_run` holds it open


def is_wandb(node: Any) -> bool:
    """Whether a `logger` group entry is a WandbLogger (of Lightning, or a subclass)."""
    return bool(node) and str(node.get("_target_", "")).endswith("WandbLogger")


def wandb_node(cfg: DictConfig) -> DictConfig | None:
    return next((n for n in (cfg.get("logger") or {}).values() if is_wandb(n)), None)


class StageWandbLogger(WandbLogger):
    """A stage's W&B logger: every key under `<label>/`, against `<label>/step`."""

    def __init__(self, label: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.label = label
        self._axis_defined = False  # on the first log: without a job run, the run starts then

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        run = self.experiment
        if not self._axis_defined:
            run.define_metric(f"{self.label}/step")
            run.define_metric(f"{self.label}/*", step_metric=f"{self.label}/step", step_sync=True)
            self._axis_defined = True
        named = {f"{self.label}/{k}": v for k, v in metrics.items()}
        run.log(named if step is None else {**named, f"{self.label}/step": step})

    @rank_zero_only
    def log_hyperparams(self, params: Any) -> None:
        """The model's hparams under `<label>/hparams`: the stages' would overwrite each other
        (and the job's config) at the top level."""
        super().log_hyperparams({f"{self.label}/hparams": redact(dict(_convert_params(params)))})


def stage_logger(node: DictConfig, label: str) -> StageWandbLogger:
    """`label`'s logger, in the job's run; outside `job_run` (run() called from Python) the
    first stage's logger starts a run as Lightning does, later ones reuse it."""
    settings = {k: v for k, v in plain(node).items() if k != "_target_"}
    return StageWandbLogger(label, experiment=_open_run, job_type=label, **settings)


@dataclass
class JobTracker:
    """What `job_run` yields: logs a finished job's results to its run (if it has one)."""

    run: Any | None

    def log_results(self, results: dict[str, Any]) -> None:
        if self.run is None:
            return
        self.run.summary.update(summary(results))
        media = {**per_grade_table(results), **confusion(results), **samples(results)}
        if media:
            self.run.log(media)
        generate = results["stages"].get("generate") or {}
        if generate.get("path"):
            self.run.log_artifact(synthetic_artifact(generate))


@contextmanager
def job_run(cfg: DictConfig) -> Iterator[JobTracker]:
    """The job's W&B run, open while the job runs and finished however it ends; exceptions
    pass through unchanged."""
    global _open_run
    node = wandb_node(cfg)
    if node is None:
        yield JobTracker(None)
        return
    run = _open_run = open_run(cfg, node)
    try:
        yield JobTracker(run)
    except BaseException:
        close_run(run, exit_code=1)
        raise
    else:
        close_run(run, exit_code=0)
    finally:
        _open_run = None


def close_run(run: Any, exit_code: int) -> None:
    """Finish `run` and return once its files are complete.

    `run.finish` only informs wandb's service process that the run is over; the service
    writes the run's transaction log (`run-*.wandb`, all an offline run has) from memory to
    disk when it closes the run's stream, later. Until then the file holds its 7-byte header
    alone, so a reader (or `wandb sync`) right after the job sees an empty run, and a job
    killed in between loses it. Tearing the service down waits for that (a few ms); the next
    job's `wandb.init` starts a new service.
    """
    import wandb

    run.finish(exit_code=exit_code)
    wandb.teardown(exit_code=exit_code)


def open_run(cfg: DictConfig, node: DictConfig) -> Any:
    import wandb

    named = {
        "dir": node.get("save_dir") or cfg.paths.output_dir,
        "mode": "offline" if node.get("offline", True) else "online",
        "group": group(cfg),
        "name": run_name(cfg),
        "job_type": job_type(cfg),
        "tags": tags(cfg),
        "config": redact(plain(cfg)),
    }
    extra = {k: v for k, v in plain(node).items() if k not in LIGHTNING_ONLY}
    return wandb.init(**{**named, **extra})  # the entry's own (project, entity, ...) win


def job_type(cfg: DictConfig) -> str:

    stages = [str(s) for s in cfg.get("stages") or []]
    if "classifier" in stages:  # fidelity then judges its synthetic images: a side task
        stages = [s for s in stages if s != "fidelity"]
    return next((s for s in reversed(STAGES) if s in stages), "job")


def group(cfg: DictConfig) -> str:
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        return f"{cfg.task_name}/{Path(HydraConfig.get().sweep.dir).name}"
    return str(cfg.task_name)


def run_name(cfg: DictConfig) -> str:
    chosen: list[str] = []
    if HydraConfig.initialized():
        hydra = HydraConfig.get()
        overrides = parsed(hydra.overrides.task)
        if hydra.mode == RunMode.MULTIRUN:
            swept = swept_keys(hydra)
            chosen = [o.input_line for o in overrides if o.key_or_group in swept]
        else:
            chosen = [
                o.input_line for o in overrides if not o.key_or_group.startswith(NOT_SETTINGS)
            ]
    return " ".join(redact(chosen)) or Path(cfg.paths.output_dir).name


def swept_keys(hydra: DictConfig) -> set[str]:
    """The keys a sweep varies: sweeps typed on its command line (saved in the sweep's
    multirun.yaml before its jobs start) and the sweeper's `params`."""
    saved = Path(hydra.sweep.dir) / "multirun.yaml"
    typed = OmegaConf.load(saved).hydra.overrides.task if saved.is_file() else []
    swept = {o.key_or_group for o in parsed(typed) if o.is_sweep_override()}
    return swept | set(hydra.sweeper.get("params") or {})


def parsed(lines: Any) -> list[Override]:
    """Hydra overrides, skipping any it cannot parse (a redacted value)."""
    parser, overrides = OverridesParser.create(), []
    for line in lines:
        try:
            overrides += parser.parse_overrides([line])
        except OverrideParseException:
            continue
    return overrides


def tags(cfg: DictConfig) -> list[str]:
    methods = list(cfg.rebalance.get("methods") or ["none"])
    return list(dict.fromkeys(map(str, [*(cfg.get("tags") or []), *methods, cfg.data.source])))


def summary(results: dict[str, Any]) -> dict[str, Any]:
    """The test metrics and seconds as in results.json; each stage's metrics and validation
    metrics as `<stage>/<metric>` (vae/val/elbo, classifier/val/qwk), its seconds too; the
    external test sets' metrics; the generator fidelity's figures as report.csv names them
    (fidelity/recon_ratio/grade2, fidelity/synthetic/accuracy, ...)."""
    values = {**results.get("metrics", {}), "seconds": results.get("seconds")}
    for stage, done in results["stages"].items():
        for part in ("metrics", "val_metrics"):
            values.update({f"{stage}/{k}": v for k, v in (done.get(part) or {}).items()})
        if "seconds" in done:
            values[f"{stage}/seconds"] = done["seconds"]
    fidelity = (results.get("audit") or {}).get("fidelity")
    return values | external_summary(results) | (fidelity_figures(fidelity) if fidelity else {})


def external_summary(results: dict[str, Any]) -> dict[str, Any]:
    """Each external test set's metrics and image count as `external/<set>/qwk`, ..."""
    values: dict[str, Any] = {}
    for name, scored in (results.get("external") or {}).items():
        metrics = {k.removeprefix("test/"): v for k, v in scored["metrics"].items()}
        metrics |= {"n_images": scored["n_images"]}
        values |= {f"external/{name}/{k}": v for k, v in metrics.items()}
    return values


def per_grade_table(results: dict[str, Any]) -> dict[str, Any]:
    """`results/per_grade`: training images by origin and the test recall and precision."""
    import wandb

    counts, metrics = results.get("counts"), results.get("metrics", {})
    if not counts:
        return {}
    columns = ["grade", "train_real", "synthetic", "oversampled", "test_recall", "test_precision"]
    rows = [
        [
            int(g),
            counts["train_real"][g],
            counts["train_synthetic"].get(g, 0),
            counts["train_oversampled"].get(g, 0),
            metrics.get(f"test/recall_grade{g}"),
            metrics.get(f"test/precision_grade{g}"),
        ]
        for g in counts["train_real"]
    ]
    return {"results/per_grade": wandb.Table(columns=columns, data=rows)}


def confusion(results: dict[str, Any]) -> dict[str, Any]:
    """The classifier's test confusion matrix as a table of counts and an image."""
    import numpy as np
    import wandb

    from drvae.callbacks.confusion import COLUMNS, confusion_image, confusion_rows

    matrix = (results["stages"].get("classifier") or {}).get("confusion_matrix")
    if matrix is None:
        return {}
    matrix = np.asarray(matrix)
    return {
        "results/confusion_matrix": wandb.Image(confusion_image(matrix, "test")),
        "results/confusion_matrix_table": wandb.Table(columns=COLUMNS, data=confusion_rows(matrix)),
    }


def samples(results: dict[str, Any]) -> dict[str, Any]:
    """The first synthetic images of each grade of the generated set, one image per grade."""
    generate = results["stages"].get("generate") or {}
    if not generate.get("path"):
        return {}
    import wandb

    from drvae.report.plots import SAMPLES_PER_GRADE, first_per_grade, tiles

    size = results["config"]["data"]["image_size"]
    return {
        "results/synthetic_samples": [
            wandb.Image(tiles(list(images), nrow=SAMPLES_PER_GRADE), caption=f"grade {grade}")
            for grade, images in first_per_grade(Path(generate["path"]), size).items()
        ]
    }


def synthetic_artifact(generate: dict[str, Any]) -> Any:
    """The synthetic set as a reference to its folder. Not checksummed: the set is never
    changed once written and its name holds its key; reading every image would cost as much
    as the set is large."""
    import wandb

    from drvae.data.synthetic import read_manifest

    folder = Path(generate["path"]).resolve()
    artifact = wandb.Artifact(
        name=f"synthetic-{generate['key'][:12]}",
        type="synthetic-set",
        metadata={"key": generate["key"], "per_grade": read_manifest(folder)["per_grade"]},
    )
    artifact.add_reference(folder.as_uri(), checksum=False)
    return artifact
