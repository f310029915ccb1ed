"""The side-by-side comparison of runs: one row per test metric, one column per job.

drvae-report runs/drvae/multiruns/2026-11-26_10-00-00-000000
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from drvae.report.collect import Job, collect, job_labels

HEADLINE = (
    "test/qwk",
    "test/macro_f1",
    "test/balanced_accuracy",
    "test/accuracy",
    "test/auroc",
    "test/referable_sensitivity",
    "test/referable_specificity",
)


def metric_names(jobs: list[Job]) -> list[str]:
    """The headline metrics first, then per-grade recall and precision, then any others."""
    names = {name for job in jobs for name in (job.results or {}).get("metrics", {})}
    rest = sorted(names - set(HEADLINE), key=lambda n: (not n.startswith("test/recall"), n))
    return [n for n in HEADLINE if n in names] + rest


def comparison_table(jobs: list[Job]) -> str:
    """A Markdown table of the finished jobs' test metrics, plus train counts per grade."""
    done = [j for j in jobs if j.results and j.results.get("metrics")]
    if not done:
        return "no finished job with test metrics"
    labels = job_labels(done)
    lines = ["| metric | " + " | ".join(labels) + " |", "|---" * (len(done) + 1) + "|"]
    for name in metric_names(done):
        values = [j.results["metrics"].get(name) for j in done]
        cells = ["" if v is None else f"{v:.3f}" for v in values]
        lines.append(f"| {name.removeprefix('test/')} | " + " | ".join(cells) + " |")
    for part in ("train_real", "train_synthetic", "train_oversampled"):
        counts = [j.results.get("counts", {}).get(part, {}) for j in done]
        cells = ["/".join(str(c[g]) for g in sorted(c)) for c in counts]
        lines.append(f"| {part} per grade | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def seedless(label: str) -> str:
    return " ".join(p for p in label.split() if not p.startswith("seed=")) or "all"


def seeds_table(jobs: list[Job]) -> str | None:
    """Mean +- std across seeds per setting (None when no setting has two seeds)."""
    done = [j for j in jobs if j.results and j.results.get("metrics")]
    groups: dict[str, list[Job]] = {}
    for job, label in zip(done, job_labels(done), strict=True):
        groups.setdefault(seedless(label), []).append(job)
    if not any(len(g) > 1 for g in groups.values()):
        return None
    head = [f"{name} (n={len(g)})" for name, g in groups.items()]
    lines = ["| metric | " + " | ".join(head) + " |", "|---" * (len(groups) + 1) + "|"]
    for name in metric_names(done):
        cells = []
        for group in groups.values():
            values = [j.results["metrics"][name] for j in group if name in j.results["metrics"]]
            cells.append(
                f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f}" if len(values) > 1 else ""
            )
        lines.append(f"| {name.removeprefix('test/')} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def report(root: Path) -> str:
    jobs = collect(root)
    if not jobs:
        raise FileNotFoundError(f"{root}: no job folder (results.json or .hydra/) under it")
    text = comparison_table(jobs)
    across_seeds = seeds_table(jobs)
    if across_seeds:
        text += "\n\nmean ± sample std across seeds:\n\n" + across_seeds
    failed = [str(j.folder) for j in jobs if j.results is None]
    if failed:
        text += "\n\nunfinished or failed jobs (no results.json):\n" + "\n".join(failed)
    return text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="drvae-report", description=__doc__.split("\n")[0])
    parser.add_argument("folder", type=Path, help="a sweep folder, or any folder of runs")
    args = parser.parse_args(argv)
    try:
        print(report(args.folder))
    except FileNotFoundError as error:
        print(f"drvae-report: error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
