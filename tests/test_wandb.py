"""One W&B run per job (drvae.tracking): real `drvae` jobs, offline, read back from the
run's `.wandb` file."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("wandb")

from test_pipeline import TINY

BLOCK, HEADER = 32768, 7  # wandb-core's LevelDB-style log: 32 KiB blocks, 7-byte headers
WHOLE, LAST = 1, 4  # chunk types ending a record (FIRST and MIDDLE continue it)


def wandb_records(run: Path) -> list[Any]:
    """The records of an offline run's `run-*.wandb` file (wandb 0.31 has no reader of its
    own): after a 7-byte `:W&B` header, chunks (crc32, length, type) of serialised
    `wandb_internal_pb2.Record`s, never straddling a 32 KiB block."""
    from wandb.proto import wandb_internal_pb2

    (path,) = run.glob("run-*.wandb")
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    records, pos, payload = [], HEADER, b""
    while pos + HEADER <= len(data):
        if BLOCK - pos % BLOCK < HEADER:  # the block's tail is padding
            pos += BLOCK - pos % BLOCK
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        payload += data[pos + HEADER : pos + HEADER + length]
        pos += HEADER + length
        if kind in (WHOLE, LAST):
            records.append(wandb_internal_pb2.Record.FromString(payload))
            payload = b""
    return records


def read_run(job: Path) -> dict[str, Any]:
    """The job's only offline run: its run record, final summary, exit code, metric
    definitions, history keys and artifacts."""
    (run,) = job.glob("wandb/offline-run-*")
    found: dict[str, Any] = {"summary": {}, "history": set(), "metrics": {}, "artifacts": []}
    for record in wandb_records(run):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            found["run"] = record.run
        elif kind == "summary":
            for item in record.summary.update:
                found["summary"]["/".join(item.nested_key) or item.key] = item.value_json
        elif kind == "history":
            found["history"] |= {"/".join(i.nested_key) or i.key for i in record.history.item}
        elif kind == "metric" and record.metric.step_metric:
            found["metrics"][record.metric.glob_name] = record.metric.step_metric
        elif kind == "artifact":
            found["artifacts"].append(record.artifact)
        elif kind == "exit":
            found["exit_code"] = record.exit.exit_code
    return found


def drvae(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    home = str(tmp_path / "wandb-home")
    wandb_env = ("WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR")
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    env.update(dict.fromkeys(wandb_env, home))
    cmd = [sys.executable, "-m", "drvae.pipeline.main", *args]
    cmd.append(f"paths.cache_dir={tmp_path / 'cache'}")
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)


def test_a_sweep_job_logs_one_run_with_its_results(tmp_path: Path) -> None:
    """One job of a sweep over seeds: one run, named by the swept value, grouped by the
    sweep, typed by its last stage; each stage on its own axis; results.json's metrics in
    its summary; tables, images and the synthetic set logged; finished with exit code 0."""
    tiny = [o for o in TINY if not o.startswith("seed=")]
    sweep = tmp_path / "sweep"
    done = drvae(
        tmp_path, "-m", f"hydra.sweep.dir={sweep}", *tiny, "seed=range(1,2)", "logger=wandb"
    )
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((sweep / "0" / "results.json").read_text())
    run = read_run(sweep / "0")
    assert (run["run"].run_group, run["run"].job_type) == ("drvae/sweep", "classifier")
    assert run["run"].display_name == "seed=1"
    assert {"synthetic", "simulated"} <= set(run["run"].tags)
    assert run["exit_code"] == 0
    summary = {k: json.loads(v) for k, v in run["summary"].items()}
    assert {k: summary[k] for k in results["metrics"]} == results["metrics"]
    vae = results["stages"]["vae"]["metrics"]
    assert summary["vae/val/elbo"] == vae["val/elbo"]
    classifier = results["stages"]["classifier"]["val_metrics"]
    assert summary["classifier/val/qwk"] == classifier["val/qwk"]
    assert run["metrics"]["vae/*"] == "vae/step"
    assert run["metrics"]["classifier/*"] == "classifier/step"
    assert {"vae/train/loss_epoch", "classifier/train/loss_epoch"} <= run["history"]
    assert summary["results/per_grade"]["nrows"] == 5
    assert summary["results/confusion_matrix"]["_type"] == "image-file"
    assert summary["results/synthetic_samples"]["count"] == 5
    (synthetic,) = [a for a in run["artifacts"] if a.type == "synthetic-set"]
    generate = results["stages"]["generate"]
    assert synthetic.name == f"synthetic-{generate['key'][:12]}"
    assert json.loads(synthetic.metadata)["per_grade"] == generate["per_grade"]


def test_a_failing_job_still_finishes_its_run(tmp_path: Path) -> None:
    """A job that fails once its run is open (a checkpoint that does not exist) leaves that
    run finished, with exit code 1, beside its failed.json."""
    job = tmp_path / "run"
    bad = "generate.checkpoint=/nonexistent.ckpt"
    done = drvae(tmp_path, f"hydra.run.dir={job}", *TINY, "logger=wandb", bad)
    assert done.returncode == 2, done.stderr[-2000:]
    assert (job / "failed.json").is_file()
    run = read_run(job)
    assert (run["run"].run_group, run["run"].job_type) == ("drvae", "classifier")
    assert run["exit_code"] == 1


def test_without_the_wandb_logger_wandb_is_never_imported(tmp_path: Path) -> None:
    """logger=csv: the job's tracker is inert, its loggers are CSV, and wandb stays
    unimported (its import and service cost nothing) and writes no folder."""
    script = f"""
import sys
from hydra import compose, initialize_config_module
from drvae.pipeline.training import make_loggers
from drvae.tracking import job_run
with initialize_config_module(config_module="drvae.conf", version_base="1.3"):
    cfg = compose("config", overrides=["logger=csv", "paths.output_dir={tmp_path}"])
with job_run(cfg) as tracker:
    loggers = make_loggers(cfg.logger, "vae")
    tracker.log_results({{}})
print([type(logger).__name__ for logger in loggers], "wandb" in sys.modules)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split("\n")[-2] == "['CSVLogger'] False"
    assert not (tmp_path / "wandb").exists()
