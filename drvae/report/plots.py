"""The comparison report's figures, as PNG files in the sweep folder."""

from __future__ import annotations

import sys
import textwrap
from functools import partial
from numbers import Real
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import torch
from PIL import Image

from drvae.atomic import write_atomic
from drvae.callbacks.confusion import confusion_image
from drvae.callbacks.vae_images import to_grid_image
from drvae.data.records import DataError
from drvae.data.synthetic import read_manifest, read_synthetic_images
from drvae.report.collect import Job
from drvae.report.stats import RECALLS, mean_std, setting_values

matplotlib.use("Agg")  # files only
import matplotlib.pyplot as plt

Groups = dict[str, list[Job]]
COUNT_METRICS = ("test/qwk", "test/macro_f1", "test/balanced_accuracy")
SAMPLES_PER_GRADE = 8
MAX_SETS = 4  # synthetic sets shown in samples.png


def _save(fig: plt.Figure, path: Path) -> str:
    fig.tight_layout()
    name = write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=110))
    plt.close(fig)
    return name


def _save_image(image: np.ndarray, path: Path) -> str:
    return write_atomic(path, lambda tmp: Image.fromarray(image).save(tmp))


def tiles(images: list[np.ndarray], nrow: int) -> np.ndarray:
    """Same-sized (H, W, 3) uint8 images -> one grid image, `nrow` a row."""
    batch = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2) / 255
    return to_grid_image(batch, nrow=nrow)


def _spread(jobs: list[Job], metric: str) -> tuple[float, float]:
    """(mean, std) across seeds; the std is 0 for a single seed (an error bar of nothing)."""
    _, mean, std = mean_std(setting_values(jobs, metric))
    return mean, 0.0 if np.isnan(std) else std


def _numeric(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def count_axis(groups: Groups) -> dict[str, Any] | None:
    """Setting -> its synthetic per-grade count when that count is what tells the settings
    apart (a count sweep), else None."""
    counts: dict[str, Any] = {}
    for label, jobs in groups.items():
        values = {repr(j.rebalance.get("per_grade")) for j in jobs}
        synthetic = all("synthetic" in (j.rebalance.get("methods") or []) for j in jobs)
        if len(values) != 1 or not synthetic:
            return None
        counts[label] = jobs[0].rebalance.get("per_grade")
    distinct = len({repr(v) for v in counts.values()}) == len(counts) > 1
    return counts if distinct and any(map(_numeric, counts.values())) else None


def count_positions(counts: dict[str, Any]) -> dict[str, float]:
    """x of each setting: its count, non-numeric counts ("not majority") past the largest."""
    numbers = [float(v) for v in counts.values() if _numeric(v)]
    step = max(max(numbers) - min(numbers), 1.0) / 5
    others = sorted((str(v), label) for label, v in counts.items() if not _numeric(v))
    x = {label: float(v) for label, v in counts.items() if _numeric(v)}
    return x | {label: max(numbers) + step * (i + 1) for i, (_, label) in enumerate(others)}


def metric_vs_count(groups: Groups, path: Path, counts: dict[str, Any]) -> str:
    """Test QWK, macro-F1 and balanced accuracy against the synthetic images per grade."""
    x = count_positions(counts)
    order = sorted(x, key=x.get)
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for metric in COUNT_METRICS:
        spread = np.array([_spread(groups[label], metric) for label in order])
        ax.errorbar([x[s] for s in order], spread[:, 0], spread[:, 1], marker="o", capsize=3,
                    label=metric.removeprefix("test/"))  # fmt: skip
    ax.set_xticks([x[s] for s in order], [str(counts[s]) for s in order], fontsize=8)
    ax.set(xlabel="synthetic images per grade (rebalance.per_grade)", ylabel="test metric")
    ax.set_title("mean ± std across seeds", fontsize=10)
    ax.legend(fontsize=8)
    return _save(fig, path)


def recall_per_grade(groups: Groups, path: Path) -> str | None:
    """Grouped bars: each setting's test recall per grade (mean, error bar std)."""
    if not any(j.metric(m) is not None for jobs in groups.values() for j in jobs for m in RECALLS):
        return None
    grades = np.arange(len(RECALLS))
    width = 0.8 / len(groups)
    fig, ax = plt.subplots(figsize=(9, 3.8))
    for i, (label, jobs) in enumerate(groups.items()):
        spread = np.array([_spread(jobs, m) for m in RECALLS])
        ax.bar(grades - 0.4 + width * (i + 0.5), spread[:, 0], width, yerr=spread[:, 1],
               capsize=2, label=textwrap.shorten(label, 50))  # fmt: skip
    ax.set(xticks=grades, xlabel="true grade", ylabel="test recall", ylim=(0, 1.05))
    ax.set_title("test recall per grade (mean ± std across seeds)", fontsize=10)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return _save(fig, path)


def confusion_matrices(groups: Groups, path: Path) -> str | None:
    """One test confusion matrix per setting, summed over its seeds."""
    images = []
    for label, jobs in groups.items():
        matrices = [j.confusion for j in jobs if j.confusion is not None]
        if matrices:
            title = textwrap.fill(f"{label} (n={len(matrices)})", 45)
            images.append(confusion_image(np.sum(matrices, axis=0), title))
    if not images:
        return None
    nrow = min(len(images), 3)
    images += [np.full_like(images[0], 255)] * (-len(images) % nrow)  # white, not black, gaps
    return _save_image(tiles(images, nrow=nrow), path)


def synthetic_sets(groups: Groups) -> dict[Path, tuple[list[str], Job]]:
    """Each synthetic set the settings trained on (one job's, the first), with the settings
    that used it and that job."""
    sets: dict[Path, tuple[list[str], Job]] = {}
    for label, jobs in groups.items():
        job = next((j for j in jobs if j.synthetic_set and j.synthetic_set.is_dir()), None)
        if job is not None:
            sets.setdefault(job.synthetic_set, ([], job))[0].append(label)
    return dict(list(sets.items())[:MAX_SETS])


def first_per_grade(folder: Path, image_size: int) -> dict[int, np.ndarray]:
    """Grade -> the set's first (at most SAMPLES_PER_GRADE) images of that grade, (n, S, S, 3)."""
    available = {int(g): n for g, n in read_manifest(folder)["per_grade"].items() if n}
    counts = {g: min(n, SAMPLES_PER_GRADE) for g, n in sorted(available.items())}
    if not counts:
        raise DataError(f"{folder}: an empty set")
    images = read_synthetic_images(folder, counts, image_size).images
    ends = np.cumsum(list(counts.values()))
    return dict(zip(counts, np.split(images, ends[:-1]), strict=True))


def sample_grid(folder: Path, image_size: int) -> tuple[np.ndarray, list[int]]:
    """A grid of the set's first images of each grade (one row a grade) and the grades."""
    per_grade = first_per_grade(folder, image_size)
    blank = np.zeros_like(next(iter(per_grade.values()))[0])
    rows = []
    for images in per_grade.values():
        rows += [*images, *[blank] * (SAMPLES_PER_GRADE - len(images))]
    return tiles(rows, nrow=SAMPLES_PER_GRADE), list(per_grade)


def samples(groups: Groups, path: Path) -> str | None:
    """A few synthetic images per grade of each set the settings trained on."""
    grids = []
    for folder, (labels, job) in synthetic_sets(groups).items():
        try:
            grid, grades = sample_grid(folder, int(job.config["data"]["image_size"]))
        except (DataError, OSError, KeyError, ValueError) as error:
            print(f"drvae-report: samples of {folder} left out: {error}", file=sys.stderr)
            continue
        grids.append((grid, grades, textwrap.fill("; ".join(labels), 80)))
    if not grids:
        return None
    heights = [7 * grid.shape[0] / grid.shape[1] + 0.5 for grid, _, _ in grids]
    fig, axes = plt.subplots(len(grids), 1, figsize=(7, sum(heights)), height_ratios=heights)
    for ax, (grid, grades, title) in zip(np.atleast_1d(axes), grids, strict=True):
        row = grid.shape[0] / len(grades)
        ax.imshow(grid)
        ax.set(xticks=[], yticks=(np.arange(len(grades)) + 0.5) * row)
        ax.set_yticklabels([f"grade {g}" for g in grades], fontsize=8)
        ax.set_title(title, fontsize=8)
    return _save(fig, path)


def write_plots(groups: Groups, folder: Path) -> tuple[list[str], list[str]]:
    """Every figure into `folder`: (file names written, why a figure was left out)."""
    counts = count_axis(groups)
    plots = (
        ("recall_per_grade", recall_per_grade, "no job has a test recall per grade"),
        ("metric_vs_count", partial(metric_vs_count, counts=counts) if counts else None,
         "the settings do not differ by a per-grade count"),
        ("confusion_matrices", confusion_matrices, "no job has a test confusion matrix"),
        ("samples", samples, "no job trained on a readable synthetic set"),
    )  # fmt: skip
    written, skipped = [], []
    for name, plot, why in plots:
        made = plot(groups, path=folder / f"{name}.png") if plot else None
        written += [made] if made else []
        skipped += [] if made else [f"{name}.png: {why}"]
    return written, skipped
