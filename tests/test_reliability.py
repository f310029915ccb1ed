"""Reliability: a non-finite loss stops the run, results are deterministic, runs never
overwrite each other, and only drvae checkpoints load, without executing pickled code."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import TINY, config, synthetic_images

from drvae.callbacks import TrainingDiverged
from drvae.models.checkpoints import CheckpointError, read_checkpoint
from drvae.models.vae import ConditionalVAE
from drvae.pipeline import training, vae_stage
from drvae.pipeline.run import run

DRVAE = Path(__file__).parents[1] / "drvae"


def test_a_nan_loss_stops_the_stage_naming_epoch_and_step(tmp_path: Path, monkeypatch) -> None:
    """The loss turns NaN in the second epoch: the run stops with the stage, epoch and step,
    the stage is not finished, and the only checkpoints are from before the fault."""
    real_step = ConditionalVAE.training_step

    def poisoned(self, batch, batch_idx):
        loss = real_step(self, batch, batch_idx)
        return loss * float("nan") if self.global_step == 8 else loss

    monkeypatch.setattr(ConditionalVAE, "training_step", poisoned)
    cache = tmp_path / "cache"
    cfg = config(cache, tmp_path / "run", "stages=[vae]", "trainer.max_epochs=3")
    with pytest.raises(
        TrainingDiverged, match=r"^vae: the training loss is nan at epoch 1, step 8"
    ):
        run(cfg)
    assert not list(cache.glob("vae/*/stage.json"))  # nothing finished
    (scratch,) = cache.glob("vae/*.partial/vae")
    saved = {
        p.name: torch.load(p, weights_only=True)["global_step"] for p in scratch.glob("*.ckpt")
    }
    assert saved == {"best-epoch=0.ckpt": 6, "last.ckpt": 6}  # 6 steps per epoch: epoch 0 only
    assert not (tmp_path / "run" / "results.json").exists()


def test_a_used_run_folder_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    """A second launch into a fixed `hydra.run.dir` (or `hydra.sweep.dir`) that an earlier
    run wrote to exits with a clear error; the earlier run's files are unchanged."""
    run_dir = tmp_path / "run"
    main, cache = [sys.executable, "-m", "drvae.pipeline.main"], f"paths.cache_dir={tmp_path / 'c'}"
    first = [*main, cache, *TINY, "stages=[vae]", f"hydra.run.dir={run_dir}"]
    assert subprocess.run(first, capture_output=True, timeout=300).returncode == 0
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    assert run_dir / "results.json" in before and run_dir / ".hydra" / "config.yaml" in before
    for again in ([*main, cache, "seed=7", f"hydra.run.dir={run_dir}"],
                  [*main, "-m", cache, "seed=7,8", f"hydra.sweep.dir={run_dir}"]):  # fmt: skip
        done = subprocess.run(again, capture_output=True, text=True, timeout=120)
        assert done.returncode == 2
        assert f"drvae: error: {run_dir} holds an earlier run's outputs" in done.stderr
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before


def test_the_same_config_and_seed_give_identical_results(tmp_path: Path) -> None:
    """Two runs from empty caches: every metric, and every synthetic image, are equal."""
    results = [run(config(tmp_path / f"cache{i}", tmp_path / f"run{i}")) for i in (1, 2)]
    assert results[0]["metrics"] == results[1]["metrics"]
    for stage in ("vae", "classifier"):
        assert results[0]["stages"][stage]["metrics"] == results[1]["stages"][stage]["metrics"]
    assert synthetic_images(results[0]) == synthetic_images(results[1])


def test_every_torch_load_in_drvae_is_weights_only() -> None:
    """A scan of the source: each `torch.load(...)` passes `weights_only=True`, and Lightning's
    resume (`trainer.fit(ckpt_path=...)`) is asked for it too."""
    loads, fits = 0, 0
    for path in DRVAE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            name = ast.unparse(node.func)
            keywords = {k.arg: ast.unparse(k.value) for k in node.keywords}
            if name == "torch.load":
                loads += 1
                assert keywords.get("weights_only") == "True", f"{path}:{node.lineno}"
            if name.endswith(".fit") and "ckpt_path" in keywords:
                fits += 1
                assert keywords.get("weights_only") == "True", f"{path}:{node.lineno}"
    assert loads >= 2 and fits == 1


class Payload:
    """Unpickling this would run code; `weights_only=True` must refuse it."""

    def __reduce__(self):
        return (Path.touch, (Path("/tmp/drvae-pwned"),))


def test_a_pickle_that_runs_code_is_refused_and_never_executed(tmp_path: Path) -> None:
    marker = Path("/tmp/drvae-pwned")
    marker.unlink(missing_ok=True)
    path = tmp_path / "evil.ckpt"
    torch.save({"drvae": "drvae.ConditionalVAE/1", "payload": Payload()}, path)
    with pytest.raises(CheckpointError, match=re.escape(str(path))):
        read_checkpoint(path)
    assert not marker.exists()


class Stop(Exception):
    """Raised by `StopAt`: a job that dies at the start of an epoch."""


class StopAt(L.Callback):
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch == self.epoch:
            raise Stop


def test_an_unreadable_resume_checkpoint_means_a_fresh_start(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    """The job dies after two epochs and its `last.ckpt` is then damaged: the relaunch says
    so, trains from the start, and still reaches the uninterrupted run's results."""
    overrides = ("stages=[vae]", "trainer.max_epochs=3")
    whole = run(config(tmp_path / "whole", tmp_path / "run0", *overrides))
    make_trainer = training.make_trainer
    with monkeypatch.context() as patch:
        patch.setattr(
            vae_stage,
            "make_trainer",
            lambda *args, **kwargs: make_trainer(*args[:4], [*args[4], StopAt(2)], **kwargs),
        )
        with pytest.raises(Stop):
            run(config(tmp_path / "cache", tmp_path / "run1", *overrides))
    (last,) = (tmp_path / "cache").glob("vae/*.partial/vae/last.ckpt")
    last.write_bytes(last.read_bytes()[:4096])
    (last.parent / "best-epoch=1.ckpt").write_bytes(b"half-written")  # e.g. on a full disk
    again = run(config(tmp_path / "cache", tmp_path / "run2", *overrides))
    assert f"{last} is unreadable" in capsys.readouterr().err
    assert again["stages"]["vae"]["resumed_after_epochs"] is None
    assert again["stages"]["vae"]["best_epoch"] == whole["stages"]["vae"]["best_epoch"]
    assert again["stages"]["vae"]["metrics"] == whole["stages"]["vae"]["metrics"]
