"""The audit's figures, as PNG files in the audit's folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import torch
from PIL import Image
from torch import Tensor

from drvae.callbacks.vae_images import to_grid_image

matplotlib.use("Agg")  # files only
import matplotlib.pyplot as plt

COLOURS = {"synthetic": "tab:orange", "heldout": "tab:blue", "train": "tab:blue"}


def _grades(report: dict[str, Any]) -> list[str]:
    return [g for g in report["grades"] if g != "pooled"]


def _save(fig: plt.Figure, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def fidelity_plot(report: dict[str, Any], path: Path) -> str:
    """Per grade: class consistency (accuracy, mean probability of the requested grade)."""
    c, grades = report["class_consistency"], _grades(report)
    x = np.arange(len(grades))
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    ax.bar(x - 0.2, [c[f"accuracy_grade{g}"] for g in grades], 0.4, label="graded as asked")
    ax.bar(x + 0.2, [c[f"probability_grade{g}"] for g in grades], 0.4, label="p(asked grade)")
    ax.set(xticks=x, xticklabels=grades, xlabel="requested grade", ylim=(0, 1))
    ax.set_title(f"class consistency (QWK {c['qwk']:.2f})", fontsize=10)
    ax.legend(fontsize=8)
    return _save(fig, path)


def distance_plot(report: dict[str, Any], path: Path) -> str:
    """Per grade and pooled: Fréchet distance to the training images (median and 95% range
    over subsets of one size), synthetic against held-out real; and mean pairwise MS-SSIM,
    synthetic against real training."""
    groups = [*_grades(report), "pooled"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.4))
    x = np.arange(len(groups))
    for shift, name in ((-0.2, "synthetic"), (0.2, "heldout")):
        cells = [report["grades"][g]["distances"].get(name, {}).get("frechet") for g in groups]
        median = [c["median"] if c else np.nan for c in cells]
        err = [[c["median"] - c["low"] if c else 0 for c in cells],
               [c["high"] - c["median"] if c else 0 for c in cells]]  # fmt: skip
        left.bar(x + shift, median, 0.4, yerr=err, capsize=2, color=COLOURS[name], label=name)
    left.set(xticks=x, xticklabels=groups, xlabel="grade", ylabel="Fréchet distance to train")
    left.legend(fontsize=8)
    grades = _grades(report)
    xs = np.arange(len(grades))
    for shift, name in ((-0.2, "synthetic"), (0.2, "train")):
        value = [report["grades"][g]["ms_ssim"].get(name, np.nan) for g in grades]
        right.bar(xs + shift, value, 0.4, color=COLOURS[name], label=name)
    right.set(xticks=xs, xticklabels=grades, xlabel="grade", ylabel="mean pairwise MS-SSIM")
    right.set_title("higher: less diverse", fontsize=9)
    right.legend(fontsize=8)
    return _save(fig, path)


def memorisation_plot(report: dict[str, Any], near: dict[str, Tensor], path: Path) -> str:
    """Nearest-training-image distances of synthetic and held-out real images, with the
    held-out 1st and 5th percentiles below which a synthetic image is a likely copy."""
    mem = report["memorisation"]
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    bins = np.linspace(0, float(max(near["synthetic"].max(), near["heldout"].max())), 50)
    for name in ("heldout", "synthetic"):
        ax.hist(near[name].numpy(), bins, alpha=0.6, density=True, color=COLOURS[name], label=name)
    for p in ("p1", "p5"):
        ax.axvline(mem[f"heldout_{p}"], color="black", ls=":" if p == "p1" else "--", lw=1)
    ax.set(xlabel="L2 distance to the nearest VAE training image (pixels in [0, 1])")
    ax.set_title(
        f"below held-out p1: {mem['share_below_p1']:.1%}, p5: {mem['share_below_p5']:.1%}",
        fontsize=10,
    )
    ax.legend(fontsize=8)
    return _save(fig, path)


def gallery(images: dict[str, np.ndarray], near: dict[str, Tensor], n: int, path: Path) -> str:
    """The `n` synthetic images closest to a training image (top) above that image;
    `images`: uint8 (N, S, S, 3) "synthetic" and "train" images."""
    order = torch.argsort(near["synthetic"])[:n]
    synthetic = images["synthetic"][order.numpy()]
    train = images["train"][near["synthetic_index"][order].numpy()]
    both = torch.from_numpy(np.concatenate([synthetic, train])).permute(0, 3, 1, 2) / 255
    Image.fromarray(to_grid_image(both, nrow=len(order))).save(path)
    return path.name


def fidelity_grid(
    blocks: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]], n: int, path: Path
) -> str:
    """One row per grade: up to `n` real test images | their reconstructions | `n` samples of
    that grade; `blocks[g]` holds the three uint8 (m, S, S, 3) sets, blank where m < n."""
    size = next(iter(blocks.values()))[0].shape[1]
    blank = np.full((size, size, 3), 255, np.uint8)
    tiles = [
        image
        for sets in blocks.values()
        for images in sets
        for image in [*images[:n], *[blank] * (n - len(images[:n]))]
    ]
    grid = to_grid_image(torch.from_numpy(np.stack(tiles)).permute(0, 3, 1, 2) / 255, nrow=3 * n)
    step = size + 2  # make_grid's 2-px padding
    fig, ax = plt.subplots(figsize=(1.5 + 3 * n * 0.6, 0.5 + len(blocks) * 0.6))
    ax.imshow(grid)
    ax.set_xticks([(b + 0.5) * n * step for b in range(3)], ["real", "reconstruction", "samples"])
    ax.set_yticks([(r + 0.5) * step for r in range(len(blocks))], [f"grade {g}" for g in blocks])
    ax.tick_params(length=0)
    for b in (1, 2):  # block borders
        ax.axvline(b * n * step + 1, color="white", lw=3)
    return _save(fig, path)


def vae_plot(report: dict[str, Any], path: Path) -> str:
    """KL per latent dimension (sorted) of each VAE on held-out real images."""
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    for name, health in report["vae_health"].items():
        kl = sorted(health["kl_per_dimension"], reverse=True)
        ax.plot(kl, label=f"{name}: {health['active_units']}/{health['latent_dim']} active")
    ax.set(xlabel="latent dimension (sorted)", ylabel="KL (nats)", yscale="symlog")
    ax.legend(fontsize=7)
    return _save(fig, path)


def write_plots(
    folder: Path,
    report: dict[str, Any],
    images: dict[str, np.ndarray],
    near: dict[str, Tensor],
    n: int,
) -> list[str]:
    """Every audit figure into `folder`; returns the file names."""
    return [
        fidelity_plot(report, folder / "class_consistency.png"),
        distance_plot(report, folder / "distances.png"),
        memorisation_plot(report, near, folder / "memorisation.png"),
        gallery(images, near, n, folder / "closest_pairs.png"),
        vae_plot(report, folder / "vae_kl.png"),
    ]
