"""Stage `generate`: sample N images per grade from the VAE into a synthetic set.

Every grade draws from its own generator, seeded by (seed, grade): asking for more images
of one grade extends its set and leaves the other grades' images unchanged. The set's
manifest names the checkpoint's SHA-256, so every synthetic image is traceable.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from torch import Tensor

from drvae import __version__
from drvae.config import plain
from drvae.data.records import NUM_GRADES
from drvae.data.synthetic import write_synthetic_set
from drvae.errors import ConfigError
from drvae.models.checkpoints import load_vae
from drvae.models.latent_samplers import LatentSampler, PosteriorSampler, PriorSampler
from drvae.models.vae import ConditionalVAE
from drvae.pipeline.sampler_stage import STATE, FittedSampler, checkpoint_shas, generate_device
from drvae.pipeline.store import StageResult, StageStore, config_key


def per_grade_counts(value: Any, key: str = "generate.per_grade") -> dict[int, int]:
    """An int (that many for every grade) or a mapping grade -> count, as {grade: count}."""
    value = plain(value)
    if isinstance(value, bool) or not isinstance(value, int | Mapping):
        raise ConfigError(f"{key}: expected an int or a mapping grade -> count, got {value!r}")
    pairs = value.items() if isinstance(value, Mapping) else ((g, value) for g in range(5))
    counts: dict[int, int] = {}
    for grade, count in pairs:
        try:
            g = int(grade)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: grade {grade!r} is not an integer 0-4") from None
        if not 0 <= g < NUM_GRADES:
            raise ConfigError(f"{key}: grade {g} is outside 0-{NUM_GRADES - 1}")
        if isinstance(count, bool) or not isinstance(count, int) or count <= 0:
            raise ConfigError(f"{key}: count {count!r} for grade {g} must be a positive integer")
        counts[g] = count
    if not counts:
        raise ConfigError(f"{key}: no grade requested")
    return dict(sorted(counts.items()))


def grade_generator(seed: int, grade: int, *more: int) -> torch.Generator:
    """A generator seeded by (seed, grade, *more), independent of every other grade's."""
    state = np.random.SeedSequence([seed, grade, *more]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state) & (2**63 - 1))


LOWER_LEVELS = 0x10E7E1  # the lower-latent stream's seed word (no epoch number reaches it)


def sample_grade(
    vae: ConditionalVAE,
    grade: int,
    count: int,
    temperature: float,
    seed: int,
    batch_size: int,
    *more_seed: int,
    sampler: LatentSampler | PosteriorSampler | None = None,
) -> np.ndarray:
    """(count, S, S, 3) uint8 samples of one grade (`more_seed`: e.g. the epoch), their
    latents from `sampler` (None: the prior, the very draws `vae.sample` makes; a
    `PosteriorSampler`: the posteriors of the grade's training images)."""
    generator = grade_generator(seed, grade, *more_seed)
    # A hierarchical VAE's lower latents get their own stream, drawn image by image, so that
    # a larger count extends the set (prefix-stable) whatever the batch size.
    lower = grade_generator(seed, grade, *more_seed, LOWER_LEVELS)
    sampler = sampler or PriorSampler(vae.hparams.latent_dim)
    if isinstance(sampler, PosteriorSampler):
        sources = sampler.stream(grade, temperature, generator)

        def decode(n: int) -> Tensor:
            x = torch.from_numpy(sources(n)).permute(0, 3, 1, 2)  # (n, 3, S, S) uint8
            return vae.sample_posterior(x, [grade] * n, temperature, generator, lower)
    else:
        latents = sampler.stream(grade, temperature, generator)

        def decode(n: int) -> Tensor:
            return vae.decode_latent(latents(n), [grade] * n, temperature, lower)

    batches = []
    for start in range(0, count, batch_size):
        x = decode(min(batch_size, count - start))  # (n, 3, S, S) in [0, 1]
        batches.append((x * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy())
    return np.concatenate(batches)


def counts_to_generate(cfg: DictConfig, needed: Mapping[int, int]) -> dict[int, int]:
    """Images per grade to generate: `generate.per_grade`, or (null) what the rebalancing
    adds. A set larger than needed is fine: the classifier takes each grade's first images."""
    if cfg.get("per_grade") is None:
        counts = {g: n for g, n in needed.items() if n}
        if not counts:
            raise ConfigError(
                "generate.per_grade: null takes the counts from the rebalancing, which adds "
                "no synthetic image; set generate.per_grade or rebalance=synthetic"
            )
        return counts
    counts = per_grade_counts(cfg.per_grade)
    short = {g: (n, counts.get(g, 0)) for g, n in needed.items() if n > counts.get(g, 0)}
    if short:
        raise ConfigError(
            f"generate.per_grade: the rebalancing needs more synthetic images per grade "
            f"(needed, asked) {short}; raise it or set it to null"
        )
    return counts


def generate_key(
    checkpoints: Mapping[int, Path],
    counts: Mapping[int, int],
    cfg: DictConfig,
    sampler: FittedSampler | None = None,
) -> tuple[str, dict]:
    shas = checkpoint_shas(checkpoints, counts)
    params = {
        "per_grade": dict(counts),
        "temperature": cfg.temperature,
        "seed": cfg.seed,
        "device": generate_device(cfg),  # GPU and CPU arithmetic differ in the last bits
        # the prior adds nothing, so sets sampled from it keep the keys they always had
        **(sampler.key_material() if sampler else {}),
    }
    return config_key("generate", shas, params), {"checkpoint_sha256": shas, **params}


def run_generate_stage(
    cfg: DictConfig,
    counts: Mapping[int, int],
    checkpoints: Mapping[int, Path],
    store: StageStore,
    sampler: FittedSampler | None = None,
) -> StageResult:
    """Write (or reuse) `counts[g]` images of each grade; `checkpoints` maps grades to VAEs,
    `sampler` is the fitted latent sampler (None: the prior)."""
    key, params = generate_key(checkpoints, counts, cfg, sampler)

    def build(tmp: Path) -> dict[str, Any]:
        start = time.perf_counter()
        images, grades = [], []
        paths = {checkpoints[g] for g in counts}
        vaes = {path: load_vae(path).to(params["device"]) for path in paths}  # each file once
        latents = sampler.load(list(counts)) if sampler else None
        for grade, count in params["per_grade"].items():
            vae = vaes[checkpoints[grade]]
            images.append(
                sample_grade(
                    vae, grade, count, cfg.temperature, cfg.seed, cfg.batch_size, sampler=latents
                )
            )
            grades += [grade] * count
        seconds = time.perf_counter() - start
        if sampler:
            shutil.copyfile(sampler.path, tmp / STATE)  # the set carries its sampler's fit
        manifest = {
            **params,
            "sampler": sampler.manifest() if sampler else {"name": "prior"},
            "checkpoints": {g: str(checkpoints[g]) for g in counts},
            "config": plain(cfg),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "drvae_version": __version__,
            "images_per_second": round(len(grades) / seconds, 1),
        }
        write_synthetic_set(tmp, np.concatenate(images), grades, manifest)
        return {
            "n_images": len(grades),
            "per_grade": params["per_grade"],
            "images_per_second": manifest["images_per_second"],
        }

    return store.run("generate", key, build)
