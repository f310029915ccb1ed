"""Between copying and noise: decode blends of two same-grade training images' posteriors.

The posterior sampler's samples are near copies of training images (`sim128_e60/`); hotter
draws trade the copies for noise. This probe asks whether blending two training images of
the requested grade (`ConditionalVAE.interpolate`: their posterior means, and for the
hierarchical VAE the encoder features its spatial latent is read from, at weight t) moves
samples away from the training set while keeping the grade. For t in T_VALUES and 100 random
same-grade pairs per grade, it reports the run's judge's class consistency (pooled accuracy,
QWK, recall per grade) and the audit's pixel memorisation figures (share of samples closer
to a training image than the held-out images' 1st percentile), and writes OUT.png beside
OUT (for each grade, a row per t). t = 0 is the reconstruction of one training image, the
posterior sampler at T -> 0.

    .venv/bin/python experiments/generator_ablation/blend_probe.py RUN_DIR [OUT.jsonl]

(RUN_DIR: a run folder with `audit_reference` and `vae` stages, or a committed copy of one;
its checkpoints must still be in the stage cache.) Prints one JSON line per t.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
from probe_run import ProbeRun  # beside this script: python puts its folder on the path
from torchvision.utils import save_image

from drvae.data.records import NUM_GRADES
from drvae.pipeline.sampler_stage import train_rows

T_VALUES = (0.0, 0.25, 0.5)
PAIRS = 100  # per grade
SEED = 0
GRID = 8  # blends per grade and t in the PNG beside OUT


def blends(vae, images: np.ndarray, rows: dict[int, np.ndarray]) -> dict[float, np.ndarray]:
    """t -> (5 * PAIRS, S, S, 3) uint8 blends, grade by grade (rows of grade g at g's block)."""
    rng = np.random.default_rng(SEED)
    steps = 5  # t = 0, 0.25, 0.5, 0.75, 1: T_VALUES are among them
    out: dict[float, list[np.ndarray]] = {t: [] for t in T_VALUES}
    for g, r in rows.items():
        for _ in range(PAIRS):
            a, b = rng.choice(r, size=2, replace=False)
            pair = torch.from_numpy(images[[a, b]]).permute(0, 3, 1, 2)  # (2, 3, S, S)
            line = vae.interpolate(pair[0], pair[1], g, g, steps=steps)  # (steps, 3, S, S)
            line = (line * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
            for t in T_VALUES:
                out[t].append(line[round(t * (steps - 1))])
    return {t: np.stack(x) for t, x in out.items()}


def main(run: Path, out: Path | None) -> None:
    probe = ProbeRun.load(run)
    rows = train_rows(probe.data, range(NUM_GRADES))
    requested = torch.as_tensor(np.repeat(list(rows), PAIRS))
    lines = []
    made = blends(probe.vae, probe.data.cache.images, rows)
    for t, x in made.items():
        line = {"run": str(run), "t": t, "n": len(x), **probe.graded(requested, x)}
        lines.append({**line, "memorisation": probe.memorised(x)})
        print(json.dumps(lines[-1]), flush=True)
    if out is not None:
        out.write_text("".join(json.dumps(line) + "\n" for line in lines))
        save_grid(made, len(rows), out.with_suffix(".png"))


def save_grid(made: dict[float, np.ndarray], n_grades: int, path: Path) -> None:
    """Rows: for each grade, one row per t (the first GRID blends of that grade)."""
    picked = [made[t][g * PAIRS : g * PAIRS + GRID] for g in range(n_grades) for t in T_VALUES]
    grid = torch.from_numpy(np.concatenate(picked)).permute(0, 3, 1, 2).float() / 255
    save_image(grid, path, nrow=GRID, padding=2)


if __name__ == "__main__":  # the cache's worker processes re-import this module
    main(Path(sys.argv[1]), Path(sys.argv[2]) if len(sys.argv) > 2 else None)
