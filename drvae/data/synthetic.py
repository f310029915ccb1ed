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
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from drvae.data.dataset import FixedSynthetic
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


def read_synthetic_images(
    folder: Path, counts: Mapping[int, int], image_size: int
) -> FixedSynthetic:
    """The first `counts[g]` images of each grade of a written set.

    Generation is prefix-stable per grade, so these are exactly the images a set of that
    size would hold: one large set serves a sweep over smaller counts.
    """
    available = {int(g): n for g, n in read_manifest(folder)["per_grade"].items()}
    short = {g: (n, available.get(g, 0)) for g, n in counts.items() if n > available.get(g, 0)}
    if short:
        raise DataError(f"{folder}: (wanted, available) images per grade {short}")
    images, grades = [], []
    for grade, n in counts.items():
        for i in range(n):
            path = folder / "images" / f"{synthetic_id(grade, i)}.png"
            image = np.asarray(Image.open(path).convert("RGB"))  # (S, S, 3) uint8
            if image.shape[:2] != (image_size, image_size):
                raise DataError(f"{path}: {image.shape[1]} px, expected {image_size} px")
            images.append(image)
            grades.append(grade)
    if not images:
        return FixedSynthetic(np.empty((0, image_size, image_size, 3), np.uint8), np.empty(0))
    return FixedSynthetic(np.stack(images), np.asarray(grades, dtype=np.int64))
