"""The composable config tree: experiments, the Optuna search, debug modes, callbacks,
launchers, a failing job inside a sweep, and bad input on the command line."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf
from test_pipeline import TINY, config

from drvae.data.splits import at_most_per_grade
from drvae.errors import ConfigError
from drvae.pipeline.main import objective
from drvae.pipeline.run import run

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


def test_every_experiment_is_listed() -> None:
    assert EXPERIMENTS == [
        "ablate_synthetic_counts",
        "compare_strategies",
        "paper_replication",
        "vae_search",
    ]


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_each_experiment_runs_a_job_with_fast_dev_run(
    name: str, cache: Path, tmp_path: Path
) -> None:
    results = run(config(cache, tmp_path, f"experiment={name}", FAST, *on_simulated(name)))
    assert results["config"]["task_name"] == name
    assert "test/qwk" in results["metrics"]
    assert results["config"]["tags"]  # every experiment labels its runs


def test_paper_replication_is_the_papers_set_up() -> None:
    with initialize_config_module(config_module="drvae.conf", version_base="1.3"):
        cfg = compose("config", ["experiment=paper_replication"], return_hydra_config=True)
    assert cfg.data.source == "aptos" and cfg.vae.train_per_grade == 100
    assert cfg.rebalance.per_grade == 100 and cfg.rebalance.count_as == "added"
    assert cfg.hydra.sweeper.params == {"rebalance": "none,synthetic", "seed": "0,1,2"}


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
        ("fdr", {"fast_dev_run": True}),
        ("overfit", {"overfit_batches": 3}),
        ("limit", {"limit_train_batches": 10, "limit_val_batches": 2, "max_epochs": 3}),
        ("profiler", {"profiler": "simple", "max_epochs": 1}),
    ],
)
def test_debug_modes_compose(mode: str, trainer: dict) -> None:
    with initialize_config_module(config_module="drvae.conf", version_base="1.3"):
        cfg = compose("config", [f"debug={mode}"])
    assert cfg.task_name == "debug" and cfg.trainer.detect_anomaly
    assert list(cfg.logger) == ["csv"] and cfg.data.num_workers == 0
    assert {k: cfg.trainer[k] for k in trainer} == trainer


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


@pytest.mark.parametrize(
    ("launcher", "target"),
    [
        ("joblib", "JoblibLauncher"),
        ("submitit_slurm", "SlurmLauncher"),
        ("submitit_local", "LocalLauncher"),
    ],
)
def test_launchers_compose(launcher: str, target: str) -> None:
    with initialize_config_module(config_module="drvae.conf", version_base="1.3"):
        cfg = compose("config", [f"launcher={launcher}"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith(target)


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
