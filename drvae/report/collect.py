"""Find and read every job under a folder (a sweep, or any tree): its `results.json`, its
`failed.json`, or neither (a job still running or killed), and group the finished jobs into
settings (what was swept, seeds apart)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from drvae.run_folder import FAILED, PREDICTIONS, RESULTS, external_predictions, read_json

FIDELITY_SETS = ("real", "recon", "synthetic")  # as drvae.metrics.fidelity names them
FIDELITY_RATIOS = ("recon_ratio", "synthetic_ratio")
EXPECTED = "expected job folders with results.json, made by `drvae -m ...`"


class NothingToReport(Exception):
    """The folder holds no job the report could compare (a user error: exit code 2)."""


@dataclass
class Job:
    """One job's folder and what it left: results (None unless it finished) or its failure."""

    folder: Path
    results: dict[str, Any] | None
    failure: dict[str, Any] | None = None
    test_set: str | None = None  # None: the test split; else the external test set seen

    def on(self, test_set: str) -> Job:
        """This job as its scores on an external test set show it."""
        return replace(self, test_set=test_set)

    @property
    def external_sets(self) -> list[str]:
        return list((self.results or {}).get("external") or {})

    @property
    def overrides(self) -> list[str]:
        return list((self.results or {}).get("overrides", []))

    @property
    def setting_overrides(self) -> list[str]:
        """The overrides that can change what the job computes (no paths, no progress bar)."""
        return [o for o in self.overrides if not is_bookkeeping(o)]

    @property
    def config(self) -> dict[str, Any]:
        return (self.results or {}).get("config") or {}

    @property
    def seed(self) -> int | None:
        """`config.seed`, else the `seed=` override (results written without a config)."""
        if self.config.get("seed") is not None:
            return int(self.config["seed"])
        seeds = [o.split("=", 1)[1] for o in self.overrides if is_seed(o)]
        return int(seeds[0]) if seeds and seeds[0].lstrip("-").isdigit() else None

    @property
    def rebalance(self) -> dict[str, Any]:
        return self.config.get("rebalance") or {}

    def metric(self, name: str) -> float | None:
        """A test metric (`test/...`) or the classifier's validation metric (`val/...`)."""
        results = self.results or {}
        if self.test_set is not None:  # an external set has test metrics only
            external = results.get("external", {}).get(self.test_set, {})
            return external.get("metrics", {}).get(name)
        if name.startswith("val/"):
            classifier = results.get("stages", {}).get("classifier", {})
            return classifier.get("val_metrics", {}).get(name)
        return results.get("metrics", {}).get(name)

    @property
    def confusion(self) -> list[list[int]] | None:
        """The test confusion matrix (rows: true grade) of the classifier stage."""
        classifier = (self.results or {}).get("stages", {}).get("classifier", {})
        return classifier.get("confusion_matrix")

    @property
    def predictions(self) -> Path | None:
        path = self.folder / self.predictions_name
        return path if path.is_file() else None

    @property
    def predictions_name(self) -> str:
        return PREDICTIONS if self.test_set is None else external_predictions(self.test_set)

    @property
    def fidelity(self) -> dict[str, Any] | None:
        """The generator fidelity (results.json `audit.fidelity`), None where not judged."""
        return ((self.results or {}).get("audit") or {}).get("fidelity")

    @property
    def synthetic_set(self) -> Path | None:
        """The folder of the synthetic set the job trained on (None when it used none)."""
        generate = (self.results or {}).get("stages", {}).get("generate") or {}
        return Path(generate["path"]) if generate.get("path") else None


def fidelity_figures(fidelity: dict[str, Any]) -> dict[str, float]:
    """`audit.fidelity` as flat numbers: fidelity/<real|recon|synthetic>/recall_grade<g>,
    fidelity/<recon|synthetic>_ratio/grade<g>, fidelity/<set>/accuracy and .../qwk; None
    values (an undefined ratio, a grade absent from a set) left out."""
    figures = {}
    for grade, row in fidelity["grades"].items():
        figures |= {f"fidelity/{s}/recall_grade{grade}": row[s] for s in FIDELITY_SETS}
        figures |= {f"fidelity/{r}/grade{grade}": row[r] for r in FIDELITY_RATIOS}
    for name, pooled in fidelity["pooled"].items():
        figures |= {f"fidelity/{name}/{k}": pooled[k] for k in ("accuracy", "qwk")}
    return {k: v for k, v in figures.items() if v is not None}


def is_seed(override: str) -> bool:
    return override.lstrip("+~").startswith("seed=")


# overrides that say where a run writes or how it prints, never what it computes: jobs that
# differ only in these are one setting (a study resumed with its cache moved stays whole)
BOOKKEEPING = ("paths.", "trainer.enable_progress_bar=")


def is_bookkeeping(override: str) -> bool:
    return override.lstrip("+~").startswith(BOOKKEEPING)


def collect(root: Path) -> list[Job]:
    """Every job folder under `root`: one with `results.json` or `failed.json`, or a Hydra
    job folder (`.hydra/`) without either, sorted by path (job 2 before job 10)."""
    root = Path(root)
    if not root.is_dir():
        raise NothingToReport(f"{root}: no such folder ({EXPECTED})")
    folders = {p.parent for name in (RESULTS, FAILED, ".hydra") for p in root.rglob(name)}
    jobs = []
    for folder in sorted(folders, key=natural):
        jobs.append(Job(folder, read_json(folder / RESULTS), read_json(folder / FAILED)))
    return jobs


def natural(path: Path | str) -> list:
    """Sort key: job 2 before job 10."""
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in Path(path).parts]


def job_labels(jobs: list[Job]) -> list[str]:
    """Short column labels: the overrides that differ between the jobs (else folder names)."""
    return _differing([j.setting_overrides for j in jobs], [j.folder.name for j in jobs])


def _differing(overrides: list[list[str]], fallback: list[str]) -> list[str]:
    shared = set.intersection(*(set(o) for o in overrides)) if overrides else set()
    return [
        " ".join(o for o in own if o not in shared) or name
        for own, name in zip(overrides, fallback, strict=True)
    ]


def settings(jobs: list[Job]) -> dict[str, list[Job]]:
    """The finished jobs grouped by setting: their overrides but the seed; labelled by the
    overrides that differ between settings ("all" for a sweep over seeds alone)."""
    done = [j for j in jobs if j.results is not None]
    own = [[o for o in j.setting_overrides if not is_seed(o)] for j in done]
    groups: dict[str, list[Job]] = {}
    for job, label in zip(done, _differing(own, ["all"] * len(done)), strict=True):
        groups.setdefault(label, []).append(job)
    return groups
