"""Synthetic training images drawn fresh from the VAE decoder every epoch (`online`); a
written set is read by `drvae.data.synthetic.read_synthetic_images`."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from drvae.models.checkpoints import load_vae
from drvae.pipeline.generate_stage import sample_grade
from drvae.pipeline.sampler_stage import FittedSampler


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
