"""Stage `sampler`: fit the latent sampler `generate.sampler` names, on the TRAIN split.

`prior` (z ~ N(0, T^2 I)) needs no fit. `gmm` fits, per grade, a Gaussian mixture to the
encoder means of that grade's training images, each grade through the VAE it is sampled
from (`drvae.models.latent_samplers`). `posterior` keeps, per grade, the cache rows of its
training images, whose posteriors the samples are drawn from. The fit is stored once per
(VAE checkpoints, data, sampler config, seed): the generate stage, the online source and the
confidence filter all sample from that one fit, and the generate stage copies it into its set.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from drvae.config import plain
from drvae.errors import ConfigError
from drvae.integrity import sha256_file
from drvae.models.checkpoints import load_vae
from drvae.models.latent_samplers import (
    COVARIANCE_TYPES,
    GaussianMixtureSampler,
    PosteriorSampler,
)
from drvae.models.vae import ConditionalVAE
from drvae.pipeline.data import PreparedData
from drvae.pipeline.store import StageResult, StageStore, config_key

SAMPLERS = ("prior", "gmm", "posterior")


STATE = "sampler.npz"  # a fitted sampler's state: in its stage's folder and in each set


def generate_device(cfg: DictConfig) -> str:
    """`generate.device`: auto (the GPU when there is one), cpu or cuda."""
    device = cfg.get("device", "cpu")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda"):
        raise ConfigError(f"generate.device: expected auto, cpu or cuda, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("generate.device=cuda, but torch sees no CUDA device")
    return device


def checkpoint_shas(checkpoints: Mapping[int, Path], grades: Iterable[int]) -> dict[int, str]:
    """Grade -> SHA-256 of its VAE checkpoint, for `grades`; each file hashed once."""
    grades = list(grades)
    digests = {path: sha256_file(path) for path in {checkpoints[g] for g in grades}}
    return {g: digests[p] for g, p in checkpoints.items() if g in grades}


def sampler_config(g: DictConfig) -> dict[str, Any]:
    """`generate.sampler` and the options that determine its fit, checked (the gmm options
    even when unused: a typo fails now, not in the run that first uses it)."""
    name = g.get("sampler", "prior")
    if name not in SAMPLERS:
        raise ConfigError(f"generate.sampler: expected one of {SAMPLERS}, got {name!r}")
    options = plain(g.get("gmm")) or {}
    sizes = {k: options.get(k, 10) for k in ("components", "min_images_per_component")}
    for key, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"generate.gmm.{key}: expected an int >= 1, got {value!r}")
    covariance_type = options.get("covariance_type", "full")
    if covariance_type not in COVARIANCE_TYPES:
        raise ConfigError(
            f"generate.gmm.covariance_type: expected one of {COVARIANCE_TYPES}, "
            f"got {covariance_type!r}"
        )
    if name in ("prior", "posterior"):
        return {"name": name}
    return {"name": name, **sizes, "covariance_type": covariance_type}


@dataclass(frozen=True)
class FittedSampler:
    """A stored fit: its config, the data it was fitted on, its state file and hash, and
    (for `posterior`) the cache's images its rows index."""

    config: dict[str, Any]
    data_key: str
    stage: StageResult
    images: np.ndarray | None = None

    @property
    def path(self) -> Path:
        return self.stage.path / STATE

    @property
    def sha256(self) -> str:
        return self.stage.info["state_sha256"]

    def key_material(self) -> dict[str, Any]:
        """What a generate key adds for this sampler (fitted on the train split: its data)."""
        return {"sampler": self.config, "sampler_data": self.data_key}

    def manifest(self) -> dict[str, Any]:
        return {**self.config, "state": STATE, "state_sha256": self.sha256}

    def load(self, grades: list[int]) -> GaussianMixtureSampler | PosteriorSampler:
        """The sampler, refusing grades it has no fit for (no training images)."""
        if self.config["name"] == "posterior":
            sampler: GaussianMixtureSampler | PosteriorSampler
            sampler = PosteriorSampler.load(self.path, self.images)
            fitted = sampler.rows
        else:
            sampler = GaussianMixtureSampler.load(self.path)
            fitted = sampler.mixtures
        missing = [g for g in grades if g not in fitted]
        if missing:
            raise ConfigError(
                f"generate.sampler={self.config['name']}: grade(s) {missing} have no training "
                "images to fit it to"
            )
        return sampler


def encoder_means(
    vae: ConditionalVAE, images: np.ndarray, index: np.ndarray, grade: int, batch_size: int
) -> np.ndarray:
    """(N, latent_dim) posterior means of `images[index]`, (N, S, S, 3) uint8 of one grade,
    read a batch at a time (`images` is the cache's memory map)."""
    means = []
    for start in range(0, len(index), batch_size):
        batch = images[index[start : start + batch_size]]  # (B, S, S, 3), a copy
        x = torch.from_numpy(batch).permute(0, 3, 1, 2)  # (B, 3, S, S) uint8
        means.append(vae.encode_means(x, [grade] * len(x)).double().cpu().numpy())
    return np.concatenate(means)


def train_latents(
    data: PreparedData, checkpoints: Mapping[int, Path], device: str, batch_size: int
) -> dict[int, np.ndarray]:
    """Grade -> encoder means of its training images (grades without any are left out)."""
    vaes = {p: load_vae(p, device) for p in set(checkpoints.values())}  # each file once
    return {
        grade: encoder_means(vaes[checkpoints[grade]], data.cache.images, rows, grade, batch_size)
        for grade, rows in train_rows(data, checkpoints).items()
    }


def train_rows(data: PreparedData, grades: Iterable[int]) -> dict[int, np.ndarray]:
    """Grade -> cache rows of its training images (grades without any are left out)."""
    train = data.splits.train
    labels = data.cache.grades[train]
    rows = {g: train[labels == g] for g in sorted(grades)}
    return {g: r for g, r in rows.items() if len(r)}


def fit_gmm(
    config: dict[str, Any], g: DictConfig, data: PreparedData, checkpoints: Mapping[int, Path]
) -> tuple[GaussianMixtureSampler, dict[str, Any]]:
    """The per-grade mixtures over encoder means, and what the stage records of the fit."""
    latents = train_latents(data, checkpoints, generate_device(g), g.batch_size)
    sampler = GaussianMixtureSampler.fit(
        latents,
        config["components"],
        config["covariance_type"],
        seed=g.seed,
        min_per_component=config["min_images_per_component"],
    )
    return sampler, {
        "train_images": {grade: len(z) for grade, z in latents.items()},
        "components_fitted": {grade: len(m.weights) for grade, m in sampler.mixtures.items()},
    }


def fit_sampler(
    g: DictConfig, data: PreparedData, checkpoints: Mapping[int, Path], store: StageStore
) -> FittedSampler | None:
    """The fitted sampler `generate.sampler` names (None for the prior), fitted or reused."""
    config = sampler_config(g)
    if config["name"] == "prior":
        return None
    device = generate_device(g)
    shas = checkpoint_shas(checkpoints, list(checkpoints))
    key = config_key("sampler", shas, data.key, config, g.seed, device)

    def build(tmp: Path) -> dict[str, Any]:
        sampler: GaussianMixtureSampler | PosteriorSampler
        if config["name"] == "posterior":
            sampler = PosteriorSampler(train_rows(data, checkpoints))
            fit = {"train_images": {grade: len(r) for grade, r in sampler.rows.items()}}
        else:
            sampler, fit = fit_gmm(config, g, data, checkpoints)
        sampler.save(tmp / STATE)
        return {**config, "state_sha256": sampler.sha256(), **fit}

    stage = store.run("sampler", key, build)
    return FittedSampler(config, data.key, stage, data.cache.images)
