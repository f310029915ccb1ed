"""Where the decoder's latents come from when sampling: the prior, or the aggregate posterior.

A VAE's samples are decodings of z ~ N(0, I), but the decoder was trained on the encoder's
posteriors, whose aggregate q(z) is rarely N(0, I): prior draws land where the decoder
never trained. `GaussianMixtureSampler` fits, per grade, a Gaussian mixture to the training
images' encoder means and samples from it instead (Ghosh et al. 2020, "From variational to
deterministic autoencoders": ex-post density estimation). It covers the flat (top) latent
only. `PosteriorSampler` draws from the aggregate posterior itself, at every latent level: a
training image of the grade, then z ~ q(z | x, grade) (a hierarchical VAE's spatial latent
too, where the lesions are): variations of training images, which the audit's memorisation
check should watch.

Each grade's latents come from a stream (`stream(grade, temperature, generator)`, then
`take(n)` as often as needed): the draws depend only on how many latents came before, never
on how they were batched, so asking for more images of a grade extends its set.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import torch
from sklearn.mixture import GaussianMixture
from torch import Tensor

CovarianceType = Literal["full", "tied", "diag", "spherical"]
COVARIANCE_TYPES: tuple[str, ...] = ("full", "tied", "diag", "spherical")
LatentStream = Callable[[int], Tensor]  # n -> the grade's next n latents, (n, latent_dim)
ImageStream = Callable[[int], np.ndarray]  # n -> the grade's next n source images (n, S, S, 3)


class LatentSampler(Protocol):
    def stream(self, grade: int, temperature: float, generator: torch.Generator) -> LatentStream:
        """One grade's latents, drawn in order from `generator` (seeded per grade)."""
        ...


def _arrays_sha256(arrays: Mapping[str, np.ndarray]) -> str:
    """SHA-256 over named arrays' names, shapes and bytes: stable across saves (an .npz
    file's bytes are not: its zip entries carry the time they were written)."""
    digest = hashlib.sha256()
    for name, array in sorted(arrays.items()):
        digest.update(f"{name}:{array.dtype.str}:{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def _check_temperature(temperature: float) -> None:
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")


@dataclass(frozen=True)
class PriorSampler:
    """z ~ N(0, T^2 I): exactly `ConditionalVAE.sample`'s draws, from the same generator."""

    latent_dim: int

    def stream(self, grade: int, temperature: float, generator: torch.Generator) -> LatentStream:
        _check_temperature(temperature)
        return lambda n: torch.randn(n, self.latent_dim, generator=generator) * temperature


@dataclass(frozen=True)
class GradeMixture:
    """One grade's fitted mixture: weights (K,), means (K, D), and the lower Cholesky factors
    of the component covariances (K, D, D), whatever the covariance type fitted."""

    weights: np.ndarray
    means: np.ndarray
    scale_tril: np.ndarray

    def draw(self, u: np.ndarray, eps: np.ndarray, temperature: float) -> np.ndarray:
        """Latents (n, D) from uniforms u (n,) (the components) and normals eps (n, D)."""
        cdf = np.cumsum(self.weights)
        k = np.minimum(np.searchsorted(cdf / cdf[-1], u, side="right"), len(cdf) - 1)  # (n,)
        # Temperature scales each component's standard deviation (covariance by T^2), not
        # the weights or means: T = 1 is the fitted density, T < 1 tightens every mode.
        z = self.means[k]  # (n, D), a copy
        for c in np.unique(k):  # per component: no (n, D, D) gather
            rows = k == c
            # einsum, not BLAS: each row's sum is the same however many rows come with it
            z[rows] += temperature * np.einsum("nj,ij->ni", eps[rows], self.scale_tril[c])
        return z


def _scale_tril(gmm: GaussianMixture) -> np.ndarray:
    """(K, D, D) lower Cholesky factors of the fitted component covariances."""
    k, d = gmm.means_.shape
    cov = gmm.covariances_
    if gmm.covariance_type == "full":
        return np.linalg.cholesky(cov)
    if gmm.covariance_type == "tied":
        return np.broadcast_to(np.linalg.cholesky(cov), (k, d, d)).copy()
    std = np.sqrt(cov if gmm.covariance_type == "diag" else np.repeat(cov[:, None], d, axis=1))
    return np.einsum("kd,de->kde", std, np.eye(d))  # (K, D, D) diagonal


def fit_grade_mixture(
    latents: np.ndarray,
    components: int,
    covariance_type: CovarianceType,
    seed: int,
    min_per_component: int = 10,
) -> GradeMixture:
    """A mixture of at most `components` Gaussians, and at most one per `min_per_component`
    latents (at least one): a component per latent would sit on it, and decode a copy of
    its training image."""
    if len(latents) == 0:
        raise ValueError("no latents to fit a mixture to")
    gmm = GaussianMixture(
        n_components=max(1, min(components, len(latents) // min_per_component)),
        covariance_type=covariance_type,
        random_state=seed,
    ).fit(np.asarray(latents, dtype=np.float64))
    return GradeMixture(gmm.weights_, gmm.means_, _scale_tril(gmm))


class GaussianMixtureSampler:
    """Per grade, a Gaussian mixture over the encoder means of that grade's training images.

    Each grade's stream seeds two numpy generators from one draw of the grade's torch
    generator: one picks components, one draws the normals. Each yields its numbers one
    after another whatever the batch sizes, so the draws are prefix-stable; the torch
    generator is left to the decoder (lower latent levels, if any).
    `GaussianMixture.sample` is not used: it draws all component counts at once.
    """

    def __init__(self, mixtures: Mapping[int, GradeMixture]) -> None:
        self.mixtures = dict(sorted(mixtures.items()))

    @classmethod
    def fit(
        cls,
        latents: Mapping[int, np.ndarray],
        components: int = 10,
        covariance_type: CovarianceType = "full",
        seed: int = 0,
        min_per_component: int = 10,
    ) -> GaussianMixtureSampler:
        """`latents`: grade -> (N_g, D) encoder means of that grade's training images."""
        if covariance_type not in COVARIANCE_TYPES:
            raise ValueError(
                f"covariance_type: expected one of {COVARIANCE_TYPES}, got {covariance_type!r}"
            )
        if components < 1 or min_per_component < 1:
            raise ValueError(
                f"components and min_per_component must be >= 1, got {components}, "
                f"{min_per_component}"
            )
        fit = partial(
            fit_grade_mixture,
            components=components,
            covariance_type=covariance_type,
            seed=seed,
            min_per_component=min_per_component,
        )
        return cls({g: fit(z) for g, z in latents.items()})

    def stream(self, grade: int, temperature: float, generator: torch.Generator) -> LatentStream:
        _check_temperature(temperature)
        if grade not in self.mixtures:
            raise ValueError(f"grade {grade}: no mixture fitted (fitted: {list(self.mixtures)})")
        mixture = self.mixtures[grade]
        seed = int(torch.randint(2**62, (1,), generator=generator))
        pick, noise = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
        d = mixture.means.shape[1]

        def take(n: int) -> Tensor:
            z = mixture.draw(pick.random(n), noise.standard_normal((n, d)), temperature)
            return torch.from_numpy(z).float()  # (n, D)

        return take

    # ------------------------------------------------------------ the fitted state
    def arrays(self) -> dict[str, np.ndarray]:
        """The fitted state as named float64 arrays, `g<grade>_<field>`."""
        return {
            f"g{g}_{field}": np.ascontiguousarray(getattr(m, field), dtype="<f8")
            for g, m in self.mixtures.items()
            for field in ("weights", "means", "scale_tril")
        }

    def sha256(self) -> str:
        return _arrays_sha256(self.arrays())

    def save(self, path: Path) -> None:
        np.savez_compressed(path, **self.arrays())

    @classmethod
    def load(cls, path: Path) -> GaussianMixtureSampler:
        with np.load(path) as state:
            grades = sorted({int(name.split("_")[0][1:]) for name in state.files})
            return cls(
                {
                    g: GradeMixture(
                        state[f"g{g}_weights"], state[f"g{g}_means"], state[f"g{g}_scale_tril"]
                    )
                    for g in grades
                }
            )


class PosteriorSampler:
    """Per grade, its training images (cache rows), drawn uniformly with replacement: the
    generate stage decodes a draw from each one's posterior q(z | x, grade) at T
    (`ConditionalVAE.sample_posterior`). Its fitted state is the rows: which images a
    grade's samples vary."""

    def __init__(self, rows: Mapping[int, np.ndarray], images: np.ndarray | None = None) -> None:
        """`rows`: grade -> cache rows of its training images; `images`: the cache's
        (N, S, S, 3) uint8 array (a memory map) they index, needed to stream."""
        empty = [g for g, r in rows.items() if len(r) == 0]
        if empty:
            raise ValueError(f"grade(s) {empty}: no training images to sample posteriors of")
        self.rows = {g: np.asarray(r, dtype="<i8") for g, r in sorted(rows.items())}
        self.images = images

    def stream(self, grade: int, temperature: float, generator: torch.Generator) -> ImageStream:
        """The grade's source images; a numpy generator seeded from one draw of `generator`
        picks them (prefix-stable), and leaves `generator` to the posterior's noise."""
        _check_temperature(temperature)
        if grade not in self.rows:
            raise ValueError(f"grade {grade}: no training images (fitted: {list(self.rows)})")
        if self.images is None:
            raise ValueError("PosteriorSampler: no images to stream from (pass the cache's)")
        rows, images = self.rows[grade], self.images
        pick = np.random.default_rng(int(torch.randint(2**62, (1,), generator=generator)))
        return lambda n: images[rows[pick.integers(len(rows), size=n)]]  # (n, S, S, 3) copy

    def arrays(self) -> dict[str, np.ndarray]:
        return {f"g{g}_rows": r for g, r in self.rows.items()}

    def sha256(self) -> str:
        return _arrays_sha256(self.arrays())

    def save(self, path: Path) -> None:
        np.savez_compressed(path, **self.arrays())

    @classmethod
    def load(cls, path: Path, images: np.ndarray | None = None) -> PosteriorSampler:
        with np.load(path) as state:
            return cls({int(n.split("_")[0][1:]): state[n] for n in state.files}, images)
