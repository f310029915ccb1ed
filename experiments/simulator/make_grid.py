"""Preview grid of the simulator: one row per grade (0-4), `--cols` images each.

.venv/bin/python experiments/simulator/make_grid.py --out experiments/simulator/grid_128px.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from drvae.data.records import GRADE_NAMES, NUM_GRADES
from drvae.data.simulator import render_fundus

LABEL_WIDTH = 120  # px of text column on the left of each row


def make_grid(size: int = 128, cols: int = 6, seed: int = 0) -> np.ndarray:
    """(5 * size, LABEL_WIDTH + cols * size, 3) uint8 RGB; tile (g, j) uses rng [seed, g, j]."""
    rows = []
    for grade in range(NUM_GRADES):
        tiles = [
            render_fundus(grade, size, np.random.default_rng([seed, grade, j])) for j in range(cols)
        ]
        label = np.zeros((size, LABEL_WIDTH, 3), np.uint8)
        for k, text in enumerate((f"grade {grade}", GRADE_NAMES[grade])):
            org = (6, size // 2 - 6 + 22 * k)
            cv2.putText(
                label, text, org, cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA
            )
        rows.append(np.hstack([label, *tiles]))
    return np.vstack(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("experiments/simulator/grid_128px.png"))
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--cols", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    grid = make_grid(args.size, args.cols, args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.out), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
    print(f"wrote {args.out} ({grid.shape[1]}x{grid.shape[0]})")


if __name__ == "__main__":
    main()
