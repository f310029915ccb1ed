"""Secrets (API keys, tokens, passwords) never reach a run's saved configs, logs or results."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TINY  # tests/ is on sys.path

from drvae.secrets import REDACTED, redact, redact_hydra_files

KEY = "sk-test-0123456789abcdef"  # WANDB_API_KEY
PASSWORD = "pw-test-fedcba9876543210"  # another secret variable, pulled in under a plain key


def test_values_under_secret_keys_are_redacted_at_any_depth() -> None:
    config = {
        "logger": {"wandb": {"settings": {"api_key": "abc", "API-KEY": 1}, "project": "drvae"}},
        "runs": [{"token": "t", "name": "x"}, {"db": {"Password": None, "user": "me"}}],
        "seed": 0,
    }
    assert redact(config) == {
        "logger": {
            "wandb": {"settings": {"api_key": REDACTED, "API-KEY": REDACTED}, "project": "drvae"}
        },
        "runs": [{"token": REDACTED, "name": "x"}, {"db": {"Password": REDACTED, "user": "me"}}],
        "seed": 0,
    }


def test_secret_overrides_and_environment_values_are_redacted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WANDB_API_KEY", KEY)
    monkeypatch.setenv("MY_SERVICE_PASSWORD", "0")  # too short to look for: "0" stays
    overrides = ["+other.token=abc", "seed=0", f"+note.text=x{KEY}y", "~a.secret", "n=0"]
    assert redact(overrides) == [
        f"+other.token={REDACTED}",
        "seed=0",
        f"+note.text=x{REDACTED}y",
        "~a.secret",
        "n=0",
    ]
    dirname = f"+other.api_key=abc,seed=0,data.root=/d/{KEY}"
    assert redact(dirname) == f"+other.api_key={REDACTED},seed=0,data.root=/d/{REDACTED}"
    assert redact((1, 2.5, True, None)) == (1, 2.5, True, None)


def test_hydra_files_are_rewritten_only_when_they_hold_a_secret(tmp_path: Path) -> None:
    hydra = tmp_path / ".hydra"
    hydra.mkdir()
    clean = "a: 1\nb: ${oc.env:HOME}\n"
    (hydra / "config.yaml").write_text(clean)
    (hydra / "overrides.yaml").write_text("- seed=1\n- +x.password=hunter22\n")
    redact_hydra_files(tmp_path)
    assert (hydra / "config.yaml").read_text() == clean
    assert "hunter22" not in (hydra / "overrides.yaml").read_text()
    assert sorted(p.name for p in hydra.iterdir()) == ["config.yaml", "overrides.yaml"]
    redact_hydra_files(tmp_path / "missing")  # no .hydra folder: nothing to do


@pytest.mark.parametrize(
    "multirun",
    [pytest.param(False, marks=pytest.mark.slow), True],  # a single run: 16 s, make test-full
    ids=["run", "multirun"],
)
def test_no_secret_reaches_the_run_folder(tmp_path: Path, multirun: bool) -> None:
    """A real `drvae` run (or a one-job multirun, whose launcher logs each job's overrides)
    with CSV and (offline) W&B loggers, a secret pulled into the config from the environment,
    one typed on the command line and one under a plain key: no file of the run folder, and
    no line of its output, holds any of them."""
    folder = tmp_path / "run"
    run_dir = folder / "0" if multirun else folder
    mode = ["-m", f"hydra.sweep.dir={folder}"] if multirun else [f"hydra.run.dir={folder}"]
    cmd = [
        sys.executable, "-m", "drvae.pipeline.main", *mode, *TINY, "stages=[vae]",
        "logger=[csv,wandb]", f"paths.cache_dir={tmp_path / 'cache'}",
        "+probe.api_key=${oc.env:WANDB_API_KEY}", f"+other.token={KEY}",
        "+note.text=${oc.env:DRVAE_TEST_PASSWORD}",
    ]  # fmt: skip
    wandb_home = tmp_path / "wandb-home"
    env = {
        **os.environ,
        "WANDB_API_KEY": KEY,
        "DRVAE_TEST_PASSWORD": PASSWORD,
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "WANDB_CONFIG_DIR": str(wandb_home),
        "WANDB_CACHE_DIR": str(wandb_home),
        "WANDB_DATA_DIR": str(wandb_home),
    }
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((run_dir / "results.json").read_text())
    assert results["stages"]["vae"]["metrics"]
    assert results["config"]["probe"]["api_key"] == REDACTED
    assert results["config"]["note"]["text"] == REDACTED
    assert results["config"]["data"]["image_size"] == 32
    assert f"+other.token={REDACTED}" in results["overrides"]
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    assert list(run_dir.glob("wandb/offline-run-*"))  # W&B did write its files
    leaks = sorted(
        str(path.relative_to(folder))
        for path in folder.rglob("*")
        if path.is_file() and any(s.encode() in path.read_bytes() for s in (KEY, PASSWORD))
    )
    assert leaks == []
    assert KEY not in done.stdout + done.stderr and PASSWORD not in done.stdout + done.stderr
