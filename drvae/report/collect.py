"""Find and read the `results.json` of every job under a folder (a sweep, or any tree)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RESULTS = "results.json"


@dataclass
class Job:
    """One job's folder and its results (None when it never finished)."""

    folder: Path
    results: dict[str, Any] | None

    @property
    def overrides(self) -> list[str]:
        return list((self.results or {}).get("overrides", []))


def collect(root: Path) -> list[Job]:
    """Every job folder under `root`: one with `results.json`, or a Hydra job folder
    (`.hydra/`) without one (failed or still running), sorted by path."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder")
    folders = {p.parent for p in root.rglob(RESULTS)} | {p.parent for p in root.rglob(".hydra")}
    jobs = []
    for folder in sorted(folders, key=_natural):
        path = folder / RESULTS
        jobs.append(Job(folder, json.loads(path.read_text()) if path.is_file() else None))
    return jobs


def _natural(path: Path) -> list:
    """Sort key: job 2 before job 10."""
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in path.parts]


def job_labels(jobs: list[Job]) -> list[str]:
    """Short column labels: the overrides that differ between the jobs (else folder names)."""
    shared = set.intersection(*(set(j.overrides) for j in jobs)) if jobs else set()
    labels = []
    for job in jobs:
        own = [o for o in job.overrides if o not in shared]
        labels.append(" ".join(own) or job.folder.name)
    return labels
