"""Figures and a results row for one `drvae` run (stages vae and generate).

    python experiments/vae_samples/make_figures.py RUN_DIR NAME

Writes, beside this script, `NAME_synthetic.png` (the run's synthetic set: one row per
grade, the first 12 images of each), `NAME_reconstructions.png` (the last epoch's validation
images above their reconstructions), for a conditional VAE `NAME_grade_sweep.png` (one row
per latent z, the same z decoded as grade 0 to 4 from left to right: what the grade
conditioning alone changes) and `NAME.json` (the run's final val ELBO terms and
throughputs), and prints the Markdown row of README.md's table.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from drvae.callbacks.vae_images import to_grid_image
from drvae.data.readers import read_dataset
from drvae.models.checkpoints import load_vae

HERE = Path(__file__).parent
PER_ROW = 12


def synthetic_grid(folder: Path) -> np.ndarray:
    records = read_dataset("synthetic", folder).records
    rows = []
    for grade in sorted({r.grade for r in records}):
        paths = [r.path for r in records if r.grade == grade][:PER_ROW]
        rows += [np.asarray(Image.open(p).convert("RGB")) for p in paths]
    images = torch.from_numpy(np.stack(rows)).permute(0, 3, 1, 2).float() / 255
    return to_grid_image(images, nrow=PER_ROW)


def grade_sweep(checkpoint: Path, rows: int = 8) -> tuple[np.ndarray, float] | None:
    """The grid, and the grade effect: the mean absolute pixel change when only the grade
    changes, as a fraction of the change when only z changes (0: the grade is ignored)."""
    vae = load_vae(checkpoint)
    k = vae.hparams.num_classes
    if not k:
        return None
    z = torch.randn(rows, vae.hparams.latent_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        grades = torch.arange(k).repeat(rows)  # (rows * k,): row r holds z[r] at every grade
        x = torch.sigmoid(vae.decoder(z.repeat_interleave(k, dim=0), grades))
    table = x.view(rows, k, -1)  # (z, grade, pixels)
    by_grade = (table[:, :, None] - table[:, None, :]).abs().mean()  # same z, grade pairs
    by_z = (table[:, None] - table[None, :]).abs().mean()  # same grade, z pairs
    return to_grid_image(x, nrow=k), round(float(by_grade / by_z), 3)


def per_grade_vaes(vae: dict, val_counts: dict[str, int]) -> dict:
    """One unconditional VAE per grade: val metrics averaged over all val images (each
    grade's VAE scored on its own grade's images), throughput over all images."""
    fits = vae["fits"].values()
    weights = np.array([val_counts[str(g)] for g in range(len(fits))], dtype=float)
    keys = next(iter(fits))["metrics"].keys()
    metrics = {k: float(np.average([f["metrics"][k] for f in fits], weights=weights)) for k in keys}
    # Same epochs for every grade: the overall rate is all images over all time.
    seconds = sum(f["train_images"] / f["train_images_per_second"] for f in fits)
    rate = sum(f["train_images"] for f in fits) / seconds
    epochs = next(iter(fits))["epochs"]
    return {**vae, "metrics": metrics, "epochs": epochs, "train_images_per_second": round(rate, 1)}


def last_reconstructions(run_dir: Path) -> Image.Image:
    """The last epoch's reconstruction grid of each VAE, stacked (one per grade if several)."""
    grids = []
    for logs in sorted((run_dir / "logs").glob("vae*")):
        last = sorted((logs / "images").glob("vae_reconstructions_epoch*.png"))[-1]
        grids.append(np.asarray(Image.open(last).convert("RGB")))
    return Image.fromarray(np.concatenate(grids))


def main(run_dir: Path, name: str) -> None:
    results = json.loads((run_dir / "results.json").read_text())
    vae, generate = results["stages"]["vae"], results["stages"]["generate"]
    if "fits" in vae:
        vae = per_grade_vaes(vae, results["data"]["counts"]["val"])
    Image.fromarray(synthetic_grid(Path(generate["path"]))).save(HERE / f"{name}_synthetic.png")
    sweep = grade_sweep(Path(vae["path"])) if "fits" not in vae else None
    if sweep is not None:
        Image.fromarray(sweep[0]).save(HERE / f"{name}_grade_sweep.png")
    last_reconstructions(run_dir).save(HERE / f"{name}_reconstructions.png")
    summary = {
        "command": "drvae " + " ".join(results.get("overrides", [])),
        "data": results["config"]["data"]["source"],
        "image_size": results["config"]["data"]["image_size"],
        "train_counts": results["data"]["counts"]["train"],
        "epochs": vae["epochs"],
        "val": vae["metrics"],
        "train_images_per_second": vae["train_images_per_second"],
        "vae_stage_seconds": vae["seconds"],
        "generate_images_per_second": generate["images_per_second"],
        "generate_stage_seconds": generate["seconds"],
        "grade_effect": sweep[1] if sweep else None,
        "versions": results["versions"],
    }
    (HERE / f"{name}.json").write_text(json.dumps(summary, indent=2))
    m = vae["metrics"]
    print(
        f"| {name} | {summary['image_size']} | {sum(summary['train_counts'].values())} | "
        f"{vae['epochs']} | {m['val/recon']:.1f} | {m['val/kl']:.1f} | {m['val/elbo']:.1f} | "
        f"{m['val/bpd']:.4f} | {m['val/active_units']:.0f} | {vae['train_images_per_second']} | "
        f"{generate['images_per_second']} |"
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
