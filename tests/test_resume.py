"""A job killed (SIGKILL: no clean-up runs) during VAE training, generation or classifier
training, then relaunched with the same command, resumes from its last checkpoint or redoes
only the unfinished stage, and ends with the results of a run that was never stopped."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import TINY, synthetic_images  # tests/ is on sys.path

# Long enough that the poll below sees the first checkpoint before the job ends.
EPOCHS = "trainer.max_epochs=5"


def command(cache: Path, run_dir: Path, *overrides: str) -> list[str]:
    return [
        sys.executable, "-m", "drvae.pipeline.main", *TINY, EPOCHS, *overrides,
        f"paths.cache_dir={cache}", f"hydra.run.dir={run_dir}",
    ]  # fmt: skip


def finish(cache: Path, run_dir: Path, *overrides: str) -> dict:
    done = subprocess.run(command(cache, run_dir, *overrides), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((run_dir / "results.json").read_text())


def kill_when(cache: Path, run_dir: Path, pattern: str, *overrides: str) -> None:
    """Start the job and SIGKILL it as soon as a file matching `pattern` (under the stage
    cache) exists; fails if the job ends first."""
    job = subprocess.Popen(
        command(cache, run_dir, *overrides), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 300
    while not list(cache.glob(pattern)):
        assert job.poll() is None, f"the job ended before {pattern}: {job.stderr.read()[-2000:]}"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    job.send_signal(signal.SIGKILL)
    assert job.wait() == -signal.SIGKILL
    assert not (run_dir / "results.json").exists()


@pytest.mark.parametrize(
    ("stage", "overrides"),
    [
        # the same resume code as the classifier's, 36 s: make test-full runs it
        pytest.param("vae", ["stages=[vae]"], marks=pytest.mark.slow),
        ("classifier", ["rebalance=oversample"]),
    ],
)
def test_a_training_killed_mid_fit_resumes_to_the_same_results(
    tmp_path: Path, stage: str, overrides: list[str]
) -> None:
    whole = finish(tmp_path / "cache-whole", tmp_path / "whole", *overrides)
    cache = tmp_path / "cache"
    kill_when(cache, tmp_path / "killed", f"{stage}/*.partial/**/last.ckpt", *overrides)
    assert not list(cache.glob(f"{stage}/*/stage.json"))  # the stage is not finished
    resumed = finish(cache, tmp_path / "resumed", *overrides)
    summary = resumed["stages"][stage]
    assert summary["reused"] is False and summary["resumed_after_epochs"] >= 1
    assert summary["epochs"] == whole["stages"][stage]["epochs"] == 5
    assert summary["metrics"] == whole["stages"][stage]["metrics"]
    assert resumed.get("metrics") == whole.get("metrics")
    assert not list(cache.glob(f"{stage}/*.partial"))  # cleaned up once finished


@pytest.mark.slow  # 39 s; build_once's kill safety is also tested on the cache (test_cache)
def test_a_killed_generation_leaves_no_set_and_is_redone(tmp_path: Path) -> None:
    """Killed while writing images: no synthetic set a later run would use exists; the
    relaunch trains nothing again (the VAE is reused) and writes the identical set."""
    overrides = ["stages=[vae,generate]", "generate.per_grade=1500", "data.image_size=32"]
    cache = tmp_path / "cache"
    kill_when(cache, tmp_path / "killed", "generate/*.tmp-*/images/syn_g0_000100.png", *overrides)
    assert list(cache.glob("vae/*/stage.json"))  # the VAE stage finished before the kill
    assert not list(cache.glob("generate/*/stage.json"))
    resumed = finish(cache, tmp_path / "resumed", *overrides)
    assert resumed["stages"]["vae"]["reused"] is True
    assert resumed["stages"]["generate"]["n_images"] == 7500
    assert not list(cache.glob("generate/*.tmp-*"))  # the killed build's leftovers are gone
    whole = finish(tmp_path / "cache-whole", tmp_path / "whole", *overrides)
    assert synthetic_images(resumed) == synthetic_images(whole)
