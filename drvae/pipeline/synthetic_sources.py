"""Where the classifier's synthetic training images come from: a set the generate stage
wrote (read once), or fresh samples from the VAE decoder every epoch (`online`)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from PIL import Image

from drvae.data.dataset import FixedSynthetic
from drvae.data.records import DataError
from drvae.data.synthetic import read_manifest, synthetic_id
from drvae.models.checkpoints import load_vae
from drvae.pipeline.generate_stage import sample_grade
from drvae.pipeline.sampler_stage import FittedSampler


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


class DecoderSynthetic:
    """`counts[g]` new images of each grade per epoch, sampled from the grade's VAE with a
    generator seeded by (seed, grade, epoch): fresh every epoch, and reproducible. Latents
    come from the generate stage's `sampler` (None: the prior)."""

    def __init__(
        self,
        checkpoints: Mapping[int, Path],
        counts: Mapping[int, int],
        temperature: float,
        seed: int,
        batch_size: int,
        sampler: FittedSampler | None = None,
    ) -> None:
        vaes = {path: load_vae(path) for path in set(checkpoints.values())}  # each file once
        self.vaes = {g: vaes[checkpoints[g]] for g in counts}
        self.counts = {g: n for g, n in counts.items() if n}
        self.temperature, self.seed, self.batch_size = temperature, seed, batch_size
        self.sampler = sampler.load(list(self.counts)) if sampler else None

    def draw(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        t, seed, batch = self.temperature, self.seed, self.batch_size
        images = [
            sample_grade(self.vaes[g], g, n, t, seed, batch, epoch, sampler=self.sampler)
            for g, n in self.counts.items()
        ]
        grades = np.repeat(list(self.counts), list(self.counts.values()))
        return np.concatenate(images), grades
