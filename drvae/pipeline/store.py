"""The stage store: each stage's output in a folder named by a key over what determines it.

`<cache_dir>/<stage>/<key[:16]>/` holds the stage's files and `stage.json` (written last:
key, the stage's summary, seconds, time, version). A stage whose folder is finished is
reused, not rerun; so a sweep over classifier settings trains the VAE once per (data, VAE
config, seed), and a relaunched job skips finished stages. Builds are atomic and locked, and
a folder whose files no longer match their checksums is rebuilt (`drvae.atomic.build_once`).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drvae import __version__
from drvae.atomic import build_once
from drvae.config import plain
from drvae.integrity import corruption

STAGE_FILE = "stage.json"


def config_key(*parts: Any) -> str:
    """SHA-256 over canonical JSON of the parts (configs, input keys, versions)."""
    text = json.dumps([plain(p) for p in parts], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class StageResult:
    """A finished stage: where its output is, and whether this run computed it."""

    name: str
    key: str
    path: Path
    reused: bool
    seconds: float  # this run's time on the stage (a reused stage costs only the lookup)
    info: dict[str, Any] = field(default_factory=dict)  # what the build returned

    def summary(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "path": str(self.path),
            "reused": self.reused,
            "seconds": round(self.seconds, 3),
            **self.info,
        }


class StageStore:
    """Finished stage outputs under `root`, one folder per (stage, key)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()

    def folder(self, stage: str, key: str) -> Path:
        return self.root / stage / key[:16]

    def scratch(self, stage: str, key: str) -> Path:
        """Where a build keeps what lets a killed build resume (training checkpoints); it
        outlives the process, unlike the build's temporary folder, and is removed once the
        stage is finished."""
        return self.folder(stage, key).with_name(f"{key[:16]}.partial")

    def finished(self, stage: str, key: str) -> dict[str, Any] | None:
        """The stage file of a finished, intact output, or None."""
        folder = self.folder(stage, key)
        if not (folder / STAGE_FILE).is_file():
            return None
        problem = corruption(folder)
        if problem:
            print(f"drvae: {stage} output {folder} is corrupt ({problem})", file=sys.stderr)
            return None
        return json.loads((folder / STAGE_FILE).read_text())

    def run(self, stage: str, key: str, build: Callable[[Path], dict[str, Any]]) -> StageResult:
        """The stage's output, built by `build(tmp_folder) -> info` unless already finished."""
        folder = self.folder(stage, key)
        start = time.perf_counter()

        def build_and_record(tmp: Path) -> None:
            info = build(tmp)
            record = {
                "stage": stage,
                "key": key,
                "info": info,
                "build_seconds": round(time.perf_counter() - start, 3),
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "drvae_version": __version__,
            }
            (tmp / STAGE_FILE).write_text(json.dumps(record, indent=2, default=str))

        reused = build_once(folder, lambda f: (f / STAGE_FILE).is_file(), build_and_record)
        shutil.rmtree(self.scratch(stage, key), ignore_errors=True)
        record = json.loads((folder / STAGE_FILE).read_text())
        seconds = time.perf_counter() - start
        return StageResult(stage, key, folder, reused, seconds, record["info"])
