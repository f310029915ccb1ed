"""Synthetic image sets: written by the generate stage, read back like any real dataset.

Layout of a set (the folder appears only when complete; `manifest.json` is written last):

    images/<image_id>.png     one PNG per synthetic image
    labels.csv                image_id,grade
    manifest.json             checkpoint SHA-256, config, per-grade counts, seed, time, version

The reader `drvae.data.readers.synthetic` (source `synthetic`) yields `Record`s marked
`synthetic=True`, so the cache and the DataModule treat them exactly like real images.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from drvae.data.records import NUM_GRADES, DataError

MANIFEST = "manifest.json"


def synthetic_id(grade: int, index: int) -> str:
    return f"syn_g{grade}_{index:06d}"


def write_synthetic_set(
    folder: Path, images: np.ndarray, grades: Sequence[int], manifest: dict[str, Any]
) -> None:
    """Write (N, S, S, 3) uint8 images and their grades into `folder`, the manifest last.

    Call it on a temporary folder that is renamed when done (`drvae.atomic.build_once`).
    """
    if len(images) != len(grades):
        raise ValueError(f"{len(images)} images but {len(grades)} grades")
    (folder / "images").mkdir(parents=True)
    seen: Counter[int] = Counter()
    with (folder / "labels.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image_id", "grade"])
        for image, grade in zip(images, grades, strict=True):
            image_id = synthetic_id(int(grade), seen[int(grade)])
            seen[int(grade)] += 1
            Image.fromarray(image).save(folder / "images" / f"{image_id}.png", compress_level=1)
            writer.writerow([image_id, int(grade)])
    counts = {g: seen.get(g, 0) for g in range(NUM_GRADES)}
    manifest = {**manifest, "n_images": len(images), "per_grade": counts}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str))


def read_manifest(root: Path) -> dict[str, Any]:
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise DataError(
            f"{root}: not a finished synthetic set (no {MANIFEST}); "
            "a generation that was interrupted is never used"
        )
    return json.loads(path.read_text())
