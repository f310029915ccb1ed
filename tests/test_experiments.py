"""The composable config tree: experiments, the Optuna search, debug modes, callbacks,
launchers, a failing job inside a sweep, and bad input on the command line."""

from __future__ import annotations

import csv
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import TINY, config
from hydra import compose, initialize_config_module
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import instantiate
from lightning.pytorch.accelerators import CPUAccelerator
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.profilers import SimpleProfiler
from omegaconf import DictConfig, OmegaConf

from drvae.data.rebalance import RebalancePlan
from drvae.data.splits import at_most_per_grade
from drvae.errors import ConfigError
from drvae.pipeline.main import objective
from drvae.pipeline.run import run
from drvae.pipeline.training import make_trainer, trainer_key_material
from drvae.pipeline.vae_stage import build_vae

CONF = Path(__file__).parents[1] / "conf"
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
MAIN = [sys.executable, "-m", "drvae.pipeline.main"]
FAST = "++trainer.fast_dev_run=true"


def drvae(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*MAIN, *args], capture_output=True, text=True, timeout=timeout)


def on_simulated(name: str) -> list[str]:
    """The experiment on the tiny simulated data (paper_replication names APTOS)."""
    return ["data=simulated"] if name == "paper_replication" else []


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("experiment-cache")


REAL = {0: 50, 1: 7, 2: 20, 3: 4, 4: 9}  # a training split as imbalanced as DR data


def composed(*overrides: str) -> DictConfig:
    with initialize_config_module(config_module="drvae.conf", version_base="1.3"):
        return compose("config", list(overrides), return_hydra_config=True)


def sweep_settings(cfg: DictConfig) -> list[list[str]]:
    """The settings `drvae -m` runs for `cfg` (each with every seed): the basic sweeper's
    product of `hydra.sweeper.params`, seeds left out."""
    params = [f"{key}={value}" for key, value in cfg.hydra.sweeper.params.items()]
    choices = [
        [f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()]
        for o in OverridesParser.create().parse_overrides(params)
        if o.get_key_element() != "seed"
    ]
    return [list(setting) for setting in itertools.product(*choices)]


def plan_of(cfg: DictConfig) -> RebalancePlan:
    """What a job of `cfg` makes of the training split REAL (as the pipeline's run does)."""
    r = OmegaConf.to_container(cfg.rebalance, resolve=True)
    return RebalancePlan.make(r["methods"], r["per_grade"], r["count_as"], REAL)


def each(n: int) -> dict[int, int]:
    return dict.fromkeys(range(5), n)


def balances(weights: list[float] | None, counts: dict[int, int]) -> bool:
    """Loss weights under which every grade weighs the same in total."""
    return weights is not None and np.allclose(
        [w * counts[g] for g, w in enumerate(weights)], sum(counts.values()) / 5, rtol=1e-4
    )


def check_ablate_synthetic_counts(cfg: DictConfig, plans: dict[str, RebalancePlan]) -> None:
    """VAE images only, adding 0 ... 1000 to every grade, or every grade up to the largest."""
    assert all(p.methods == ("synthetic",) and not p.class_weights for p in plans.values())
    assert all(p.oversampled == each(0) for p in plans.values())
    for n in (0, 100, 250, 500, 1000):
        assert plans[f"rebalance.per_grade={n}"].synthetic == each(n)
    assert plans["rebalance.per_grade='not majority'"].total == each(max(REAL.values()))


def check_compare_strategies(cfg: DictConfig, plans: dict[str, RebalancePlan]) -> None:
    """Each adds 100 images per grade, or weighs the grades to match the counts."""
    p = {setting.removeprefix("rebalance="): plan for setting, plan in plans.items()}
    assert p["none"].total == REAL and p["none"].class_weights is None
    assert p["oversample"].oversampled == each(100) and p["oversample"].synthetic == each(0)
    assert p["class_weight"].total == REAL and balances(p["class_weight"].class_weights, REAL)
    assert p["synthetic"].synthetic == each(100) and p["synthetic"].class_weights is None
    both = p["synthetic_class_weight"]
    assert both.synthetic == each(100) and balances(both.class_weights, both.total)


def check_paper_replication(cfg: DictConfig, plans: dict[str, RebalancePlan]) -> None:
    """APTOS; the VAE sees 100 real images per grade; 100 synthetic per grade join the full
    real training split, against no rebalancing."""
    assert cfg.data.source == "aptos"
    assert plans["rebalance=none"].total == REAL
    synthetic = plans["rebalance=synthetic"]
    assert synthetic.synthetic == each(100) and synthetic.real == REAL
    grades = np.repeat(np.arange(5), [150, 21, 60, 12, 127])
    kept = at_most_per_grade(np.arange(len(grades)), grades, cfg.vae.train_per_grade, cfg.seed)
    assert np.bincount(grades[kept]).tolist() == [100, 21, 60, 12, 100]
    size = cfg.data.image_size  # the VAE's depth fits the experiment's image size
    images = torch.zeros(2, 3, size, size, dtype=torch.uint8)
    assert build_vae(cfg, size).reconstruct(images, [0, 4]).shape == (2, 3, size, size)


def check_vae_search(cfg: DictConfig, plans: dict[str, RebalancePlan]) -> None:
    """Each trial adds 100 of its VAE's images per grade; the search maximises validation QWK
    over keys the jobs have."""
    assert plan_of(cfg).synthetic == each(100)
    results = {"stages": {"classifier": {"val_metrics": {"val/qwk": 0.25}}}}
    assert objective(cfg, {**results, "metrics": {"test/qwk": 0.9}}) == 0.25
    assert cfg.hydra.sweeper.direction == "maximize"
    assert all(OmegaConf.select(cfg, key) is not None for key in cfg.hydra.sweeper.params)


CHECKS = {
    "ablate_synthetic_counts": check_ablate_synthetic_counts,
    "compare_strategies": check_compare_strategies,
    "paper_replication": check_paper_replication,
    "vae_search": check_vae_search,
}


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_each_study_trains_on_the_sets_its_file_describes(name: str) -> None:
    """Every setting of the study's sweep, composed as `drvae -m experiment=NAME` composes
    it, and its rebalancing applied to an imbalanced split (no training: seconds)."""
    cfg = composed(f"experiment={name}")
    assert cfg.task_name == name and cfg.tags  # its runs are filed and labelled apart
    basic = "optuna" not in cfg.hydra.sweeper._target_.lower()
    settings = sweep_settings(cfg) if basic else []
    plans = {" ".join(s): plan_of(composed(f"experiment={name}", *s)) for s in settings}
    CHECKS[name](cfg, plans)  # a new study needs its check here


def test_the_vae_sees_at_most_train_per_grade_images(cache: Path, tmp_path: Path) -> None:
    results = run(config(cache, tmp_path, "vae.train_per_grade=3", "stages=[vae]"))
    real = results["data"]["counts"]["train"]
    assert results["stages"]["vae"]["train_images"] == sum(min(n, 3) for n in real.values())


def test_a_balanced_vae_sampler_is_its_own_training(cache: Path, tmp_path: Path) -> None:
    plain = run(config(cache, tmp_path / "shuffle", "stages=[vae]"))["stages"]["vae"]
    balanced = run(config(cache, tmp_path / "balanced", "stages=[vae]", "vae.sampler=balanced"))
    assert balanced["stages"]["vae"]["key"] != plain["key"]  # a new key, the old one unchanged
    with pytest.raises(ValueError, match=r"vae\.sampler"):
        run(config(cache, tmp_path / "bad", "stages=[vae]", "vae.sampler=sorted"))


def test_at_most_per_grade_is_a_seeded_subset_per_grade() -> None:
    indices, grades = np.arange(100, 130), np.array([0] * 20 + [1] * 8 + [2] * 2)
    kept = at_most_per_grade(indices, grades, 5, seed=0)
    assert np.all(np.diff(kept) > 0) and set(kept) <= set(indices)
    assert np.bincount(grades[kept - 100]).tolist() == [5, 5, 2]
    assert not np.array_equal(kept, at_most_per_grade(indices, grades, 5, seed=1))
    with pytest.raises(ValueError, match="positive"):
        at_most_per_grade(indices, grades, 0, seed=0)


def test_the_run_folder_holds_per_image_test_predictions(cache: Path, tmp_path: Path) -> None:
    results = run(config(cache, tmp_path, "rebalance=none"))
    with open(tmp_path / "test_predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == sum(results["counts"]["test"].values())
    matrix = np.zeros((5, 5), dtype=int)
    for row in rows:
        assert int(row["predicted"]) == int(np.argmax([float(row[f"p{g}"]) for g in range(5)]))
        matrix[int(row["grade"]), int(row["predicted"])] += 1
    assert matrix.tolist() == results["stages"]["classifier"]["confusion_matrix"]


@pytest.mark.slow  # 18 s; the search's config is composed and checked in the default suite
def test_the_optuna_search_runs_two_trials_on_validation_qwk(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    done = drvae(
        "-m", "experiment=vae_search", "hydra.sweeper.n_trials=2", *TINY,
        f"paths.cache_dir={tmp_path / 'cache'}", f"hydra.sweep.dir={sweep}",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    trials = [json.loads((sweep / j / "results.json").read_text()) for j in "01"]
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    values = [t["stages"]["classifier"]["val_metrics"]["val/qwk"] for t in trials]
    assert best["best_value"] == pytest.approx(max(values))
    # TINY sets the width and latent size on the command line: those are not searched
    assert set(best["best_params"]) == {"vae.model.beta"}
    assert len({t["config"]["vae"]["model"]["beta"] for t in trials}) == 2


def test_a_search_never_optimises_a_test_metric() -> None:
    results = {"stages": {"classifier": {"val_metrics": {"val/qwk": 0.5}}}}
    assert objective(OmegaConf.create({"optimized_metric": "val/qwk"}), results) == 0.5
    assert objective(OmegaConf.create({"optimized_metric": None}), results) is None
    for name in ("test/qwk", "val/kappa", "vae/val/elbo"):
        with pytest.raises(ConfigError, match="optimized_metric"):
            objective(OmegaConf.create({"optimized_metric": name}), results)


@pytest.mark.parametrize(
    ("mode", "trainer"),
    [
        ("fdr", {"fast_dev_run": 1, "limit_train_batches": 1, "limit_val_batches": 1}),
        ("overfit", {"overfit_batches": 3, "max_epochs": 30}),
        ("limit", {"limit_train_batches": 10, "limit_val_batches": 2, "max_epochs": 3}),
        ("profiler", {"max_epochs": 1}),
    ],
)
def test_each_debug_mode_reaches_both_stage_trainers_and_keys(
    mode: str, trainer: dict, tmp_path: Path
) -> None:
    """The Trainer each stage builds under `debug=MODE`; its settings enter the stage keys."""
    out = f"paths.output_dir={tmp_path}"
    cfg, default = composed(f"debug={mode}", out), composed(out)
    for stage in ("vae", "classifier"):
        built = make_trainer(cfg, stage, stage, tmp_path, [])
        assert {k: getattr(built, k) for k in trainer} == trainer
        assert isinstance(built.accelerator, CPUAccelerator) and built.num_devices == 1
        assert isinstance(built.profiler, SimpleProfiler) == (mode == "profiler")
        if mode != "fdr":  # fast_dev_run swaps the loggers for a dummy
            assert [type(logger) for logger in built.loggers] == [CSVLogger]
        assert trainer_key_material(cfg, stage) != trainer_key_material(default, stage)


def test_debug_fast_dev_run_runs_every_stage(cache: Path, tmp_path: Path) -> None:
    """debug=fdr's own synthetic count serves the default rebalancing (TINY's
    rebalance.per_grade dropped: with it the test once hid a debug mode that failed)."""
    tiny = [o for o in TINY if not o.startswith("rebalance.per_grade")]
    with initialize_config_module(config_module="drvae.conf", version_base="1.3"):
        paths = [f"paths.cache_dir={cache}", f"paths.output_dir={tmp_path}"]
        cfg = compose("config", [*tiny, *paths, "debug=fdr"])
    assert cfg.rebalance.per_grade == 4 and cfg.rebalance.methods == ["synthetic"]
    results = run(cfg)
    assert set(results["stages"]) == {
        "vae",
        "generate",
        "classifier",
        "audit_reference",
        "fidelity",
    }
    assert results["stages"]["generate"]["n_images"] == 20  # 4 per grade


@pytest.mark.slow  # fdr 1 min, limit 4 min, overfit and profiler longer: the full defaults
@pytest.mark.parametrize("mode", ["fdr", "limit", "overfit", "profiler"])
def test_every_debug_mode_runs_on_the_real_defaults(mode: str, tmp_path: Path) -> None:
    """The usage each debug file gives, `drvae debug=MODE`, with nothing else but where to
    write: a debug mode that fails on the defaults is a trap for the user who needs it."""
    with initialize_config_module(config_module="drvae.conf", version_base="1.3"):
        cfg = compose(
            "config",
            [f"debug={mode}", f"paths.cache_dir={tmp_path / 'c'}", f"paths.output_dir={tmp_path}"],
        )
    results = run(cfg)
    assert {"vae", "generate", "classifier"} <= set(results["stages"])
    assert json.loads((tmp_path / "results.json").read_text())["metrics"] == results["metrics"]


def test_early_stopping_stops_and_enters_the_stage_key(cache: Path, tmp_path: Path) -> None:
    common = ["rebalance=none", "trainer.max_epochs=4"]
    plain = run(config(cache, tmp_path / "a", *common))
    stopped = run(
        config(cache, tmp_path / "b", *common, "callbacks=early_stopping",
               "callbacks.early_stopping.patience=1", "callbacks.early_stopping.min_delta=2")
    )  # fmt: skip
    assert plain["stages"]["classifier"]["epochs"] == 4
    # QWK cannot gain 2: epoch 0 is the best, epoch 1 the one without improvement
    assert stopped["stages"]["classifier"]["epochs"] == 2
    assert plain["stages"]["classifier"]["key"] != stopped["stages"]["classifier"]["key"]


def test_reporting_callbacks_leave_stage_keys_alone(cache: Path, tmp_path: Path) -> None:
    first = run(config(cache, tmp_path / "a", "rebalance=none", "callbacks=none"))
    again = run(config(cache, tmp_path / "b", "rebalance=none", "logger=none"))
    assert again["stages"]["classifier"]["reused"]  # lr_monitor (dropped without a logger)
    assert first["stages"]["classifier"]["key"] == again["stages"]["classifier"]["key"]


def submitit_executor(launcher, folder: Path):
    """The executor a submitit launcher submits its jobs with, set up as its `launch` does:
    an executor refuses a parameter it does not know."""
    import submitit
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    kind, params = launcher._EXECUTOR, dict(launcher.params)
    params.pop("submitit_folder")
    init = {f"{kind}_{k}": params.pop(k) for k in ["max_num_timeout"] if k in params}
    executor = submitit.AutoExecutor(folder=folder, cluster=kind, **init)
    common = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(
        **{k if k in common else f"{kind}_{k}": v for k, v in params.items()}
    )
    return executor


def test_the_joblib_launcher_runs_two_jobs_at_once_in_processes() -> None:
    from joblib import Parallel
    from joblib._parallel_backends import LokyBackend

    launcher = instantiate(composed("launcher=joblib").hydra.launcher)
    parallel = Parallel(**launcher.joblib)  # as the launcher's launch builds it
    assert parallel.n_jobs == 2 and isinstance(parallel._backend, LokyBackend)


def test_the_slurm_launcher_asks_for_one_gpu_task_per_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sbatch script `drvae -m launcher=submitit_slurm hydra.launcher.partition=gpu`
    would submit (a stand-in `srun` on the PATH: no cluster here)."""
    (tmp_path / "srun").write_text("#!/bin/sh\n")
    (tmp_path / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    cfg = composed("launcher=submitit_slurm", "hydra.launcher.partition=gpu")
    executor = submitit_executor(instantiate(cfg.hydra.launcher), tmp_path)
    sbatch = executor._executor._make_submission_file_text("python job.py", "0")
    for line in ["partition=gpu", "gpus-per-node=1", "cpus-per-task=8", "mem=32GB"]:
        assert f"#SBATCH --{line}\n" in sbatch
    assert "#SBATCH --ntasks-per-node=1\n" in sbatch and "#SBATCH --time=720\n" in sbatch
    assert "#SBATCH --job-name=drvae\n" in sbatch


def test_the_local_submitit_launcher_runs_as_slurm_would_without_a_gpu(tmp_path: Path) -> None:
    cfg = composed("launcher=submitit_local")
    executor = submitit_executor(instantiate(cfg.hydra.launcher), tmp_path)
    assert executor.cluster == "local"
    assert executor._executor.parameters["gpus_per_node"] == 0
    assert executor._executor.parameters["timeout_min"] == 720


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["rebalance=synthtic"], "Could not find 'rebalance/synthtic'"),
        (["experiment=ablate"], "Could not find 'experiment/ablate'"),
        (["vae.modle.beta=1"], "Key 'modle' is not in struct"),
        (["-m", "rebalance.per_grde=0,20"], "Could not override 'rebalance.per_grde'"),
    ],
)
def test_a_misspelt_group_or_key_is_named(args: list[str], message: str, tmp_path: Path) -> None:
    done = drvae(*args, f"hydra.run.dir={tmp_path / 'run'}", f"hydra.sweep.dir={tmp_path / 's'}")
    assert done.returncode != 0 and message in done.stderr
    assert not (tmp_path / "run").exists() and not (tmp_path / "s" / "0").exists()


@pytest.mark.slow  # 16 s: two sweeps; the refused-folder case runs by default
def test_the_corrected_sweep_may_reuse_the_folder_of_one_that_never_started(
    tmp_path: Path,
) -> None:
    sweep = f"hydra.sweep.dir={tmp_path / 's'}"
    assert drvae("-m", "rebalance.per_grde=0,20", sweep).returncode != 0
    assert [p.name for p in (tmp_path / "s").iterdir()] == ["multirun.yaml"]
    done = drvae("-m", "stages=[vae]", FAST, *TINY, f"paths.cache_dir={tmp_path / 'c'}", sweep)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.slow
@pytest.mark.parametrize("name", EXPERIMENTS)
def test_each_experiment_sweep_runs_with_fast_dev_run(name: str, tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    search = ["hydra.sweeper.n_trials=2"] if name == "vae_search" else []
    done = drvae(
        "-m", f"experiment={name}", FAST, *TINY[:-2], *on_simulated(name), *search,
        f"paths.cache_dir={tmp_path / 'cache'}", f"hydra.sweep.dir={sweep}", timeout=1800,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    expected = {"ablate_synthetic_counts": 18, "compare_strategies": 15}.get(name)
    expected = expected or {"paper_replication": 6, "vae_search": 2}[name]
    assert len(list(sweep.glob("*/results.json"))) == expected
    assert (sweep / "report.md").is_file()


@pytest.mark.slow
def test_the_joblib_launcher_runs_jobs_in_parallel_processes(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    done = drvae(
        "-m", "launcher=joblib", "stages=[vae]", *TINY[:-1], "seed=1,2",
        f"paths.cache_dir={tmp_path / 'cache'}", f"hydra.sweep.dir={sweep}", timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Joblib.Parallel" in done.stdout + done.stderr
    assert len(list(sweep.glob("*/results.json"))) == 2


def test_a_failed_job_is_listed_and_the_sweep_goes_on(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    done = drvae(
        "-m", "stages=[vae]", FAST, *TINY, "vae.model.depth=9,3",
        f"paths.cache_dir={tmp_path / 'cache'}", f"hydra.sweep.dir={sweep}",
    )  # fmt: skip
    assert done.returncode == 1  # the sweep ran every job, then says one failed
    failed = json.loads((sweep / "0" / "failed.json").read_text())
    assert failed["type"] == "ConfigError" and "depth" in failed["error"]
    assert (sweep / "1" / "results.json").is_file()
    assert "drvae: 1 of 2 jobs failed" in done.stderr
    assert "depth" in (sweep / "report.md").read_text()
