"""Latent samplers: the prior (today's draws, bit for bit) and the per-grade Gaussian mixture
fitted to encoder means (Ghosh et al. 2020)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from drvae.models.latent_samplers import GaussianMixtureSampler, PosteriorSampler, PriorSampler
from drvae.models.vae import ConditionalVAE
from drvae.pipeline.generate_stage import grade_generator, sample_grade

pytestmark = pytest.mark.usefixtures("torch_one_thread")

CENTRES = np.array([[8.0, 0, 0, 0], [-8.0, 0, 0, 0], [0, 8.0, 0, 0]])  # grade 0's clusters


def clusters(seed: int = 0) -> dict[int, np.ndarray]:
    """Grade 0: 300 latents in three tight, well-separated clusters; grade 3: one cluster."""
    rng = np.random.default_rng(seed)
    grade0 = np.concatenate([c + 0.1 * rng.standard_normal((100, 4)) for c in CENTRES])
    grade3 = np.array([0, 0, 20.0, 0]) + 0.1 * rng.standard_normal((50, 4))
    return {0: grade0, 3: grade3}


@pytest.fixture(scope="module")
def gmm() -> GaussianMixtureSampler:
    return GaussianMixtureSampler.fit(clusters(), components=3, covariance_type="full", seed=0)


def draw(sampler: GaussianMixtureSampler, grade: int, sizes: list[int], t: float = 1.0):
    stream = sampler.stream(grade, t, torch.Generator().manual_seed(5))
    return torch.cat([stream(n) for n in sizes]).numpy()


def test_gmm_draws_near_the_clusters_of_each_grade(gmm: GaussianMixtureSampler) -> None:
    z = draw(gmm, 0, [600])  # (600, 4)
    distance = np.linalg.norm(z[:, None] - CENTRES[None], axis=2)  # (600, 3)
    assert distance.min(axis=1).max() < 1.0  # every draw within a cluster, none between
    share = np.bincount(distance.argmin(axis=1), minlength=3) / len(z)
    assert share.min() > 0.2  # every cluster drawn from, about a third each
    assert np.linalg.norm(draw(gmm, 3, [50]) - [0, 0, 20, 0], axis=1).max() < 1.0


def test_temperature_scales_each_components_spread(gmm: GaussianMixtureSampler) -> None:
    one = GaussianMixtureSampler.fit({3: clusters()[3]}, components=1)
    spread = [draw(one, 3, [500], t).std(axis=0) for t in (1.0, 0.5)]
    assert spread[1] == pytest.approx(spread[0] / 2, rel=1e-4)  # the same normals, scaled
    with pytest.raises(ValueError, match="temperature"):
        gmm.stream(0, 0.0, torch.Generator())


def test_gmm_draws_are_prefix_stable_whatever_the_batches(gmm: GaussianMixtureSampler) -> None:
    whole = draw(gmm, 0, [20])
    assert np.array_equal(draw(gmm, 0, [10]), whole[:10])
    assert np.array_equal(draw(gmm, 0, [3, 7, 1, 9]), whole)


def test_components_are_clipped_to_the_grades_images() -> None:
    latents = {0: clusters()[0], 4: np.repeat([[1.0], [2.0]], 4, axis=1)}
    fitted = GaussianMixtureSampler.fit(latents, components=20, covariance_type="diag")
    assert [len(m.weights) for m in fitted.mixtures.values()] == [20, 1]  # 300 // 10, 2 // 10
    few = GaussianMixtureSampler.fit(latents, 40, "diag", min_per_component=10)
    assert [len(m.weights) for m in few.mixtures.values()] == [30, 1]
    each = GaussianMixtureSampler.fit(latents, 40, "diag", min_per_component=1)
    assert [len(m.weights) for m in each.mixtures.values()] == [40, 2]
    with pytest.raises(ValueError, match="no mixture fitted"):
        fitted.stream(2, 1.0, torch.Generator())


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_state_saves_loads_and_hashes_stably(
    covariance_type: str, gmm: GaussianMixtureSampler, tmp_path: Path
) -> None:
    fitted = GaussianMixtureSampler.fit(clusters(), 3, covariance_type, seed=0)  # type: ignore[arg-type]
    fitted.save(tmp_path / "a.npz")
    loaded = GaussianMixtureSampler.load(tmp_path / "a.npz")
    assert loaded.sha256() == fitted.sha256()
    assert np.array_equal(draw(loaded, 0, [30]), draw(fitted, 0, [30]))
    again = GaussianMixtureSampler.fit(clusters(), 3, covariance_type, seed=0)  # type: ignore[arg-type]
    assert again.sha256() == fitted.sha256()  # the fit is seeded
    assert GaussianMixtureSampler.fit(clusters(1), 3, "full").sha256() != gmm.sha256()


def test_bad_options_are_refused() -> None:
    with pytest.raises(ValueError, match="covariance_type"):
        GaussianMixtureSampler.fit(clusters(), covariance_type="banana")  # type: ignore[arg-type]
    for options in ({"components": 0}, {"min_per_component": 0}):
        with pytest.raises(ValueError, match="components"):
            GaussianMixtureSampler.fit(clusters(), **options)


def tiny_vae() -> ConditionalVAE:
    torch.manual_seed(0)
    return ConditionalVAE(image_size=16, depth=2, width=4, latent_dim=4).eval()


def test_the_prior_sampler_reproduces_todays_images() -> None:
    """Before samplers, sample_grade decoded `vae.sample` batch by batch: same images."""
    vae, batch = tiny_vae(), 3
    generator = grade_generator(0, 2)
    before = [vae.sample([2] * n, 0.8, generator=generator) for n in (3, 3, 1)]  # 7 images
    expected = (torch.cat(before) * 255).round().byte().permute(0, 2, 3, 1).numpy()
    assert np.array_equal(sample_grade(vae, 2, 7, 0.8, 0, batch), expected)
    prior = PriorSampler(latent_dim=4)
    assert np.array_equal(sample_grade(vae, 2, 7, 0.8, 0, batch, sampler=prior), expected)


def test_gmm_images_are_prefix_stable(gmm: GaussianMixtureSampler) -> None:
    vae = tiny_vae()
    many = sample_grade(vae, 0, 8, 1.0, 0, 3, sampler=gmm)
    assert np.array_equal(sample_grade(vae, 0, 4, 1.0, 0, 3, sampler=gmm), many[:4])
    assert not np.array_equal(sample_grade(vae, 0, 4, 1.0, 1, 3, sampler=gmm), many[:4])


@pytest.mark.parametrize("use_gmm", [False, True])
def test_a_hierarchical_vaes_sets_are_prefix_stable(use_gmm: bool, gmm) -> None:
    """The lower latents come image by image from their own stream: a larger count keeps the
    first images whatever the batch size (the prior's top latents: 16 dims, see above)."""
    vae = hierarchical_vae(latent_dim=4 if use_gmm else 16)
    sampler = gmm if use_gmm else None
    big = sample_grade(vae, 0, 7, 1.0, 3, 4, sampler=sampler)  # batches of 4, 3
    small = sample_grade(vae, 0, 3, 1.0, 3, 2, sampler=sampler)  # batches of 2, 1
    assert np.array_equal(big[:3], small)
    assert not np.array_equal(big[3], big[4])


def hierarchical_vae(latent_dim: int = 4) -> ConditionalVAE:
    torch.manual_seed(0)
    vae = ConditionalVAE(
        image_size=16,
        depth=2,
        spatial_depth=1,
        architecture="hierarchical",
        latent_dim=latent_dim,
        width=8,
        spatial_channels=3,
    ).eval()
    for p in vae.parameters():  # weights, as training would give: the noise shows
        torch.nn.init.normal_(p, std=0.3)
    return vae


def fundus_rows() -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """12 random 16 px images; grade 1 owns rows 2, 5, 7, grade 4 row 9."""
    images = np.random.default_rng(0).integers(0, 256, (12, 16, 16, 3), dtype=np.uint8)
    return images, {1: np.array([2, 5, 7]), 4: np.array([9])}


def test_the_posterior_sampler_streams_only_its_grades_images() -> None:
    images, rows = fundus_rows()
    sampler = PosteriorSampler(rows, images)
    stream = sampler.stream(1, 1.0, torch.Generator().manual_seed(3))
    drawn = np.concatenate([stream(n) for n in (5, 1, 14)])  # (20, 16, 16, 3)
    sources = {images[r].tobytes() for r in rows[1]}
    assert {d.tobytes() for d in drawn} == sources  # each of grade 1's images, no other
    again = sampler.stream(1, 1.0, torch.Generator().manual_seed(3))(20)
    assert np.array_equal(again, drawn)  # prefix-stable whatever the batches
    with pytest.raises(ValueError, match="grade 2"):
        sampler.stream(2, 1.0, torch.Generator())
    with pytest.raises(ValueError, match="no training images"):
        PosteriorSampler({0: np.array([], dtype=int)}, images)


@pytest.mark.parametrize("architecture", ["conv", "hierarchical"])
def test_a_cold_posterior_draw_is_the_reconstruction(architecture: str) -> None:
    """At T -> 0 the draw is the posterior mean at every level: `reconstruct`'s image; at
    T = 1 the noise moves it."""
    vae = tiny_vae() if architecture == "conv" else hierarchical_vae()
    x = torch.from_numpy(fundus_rows()[0][:4]).permute(0, 3, 1, 2)  # (4, 3, 16, 16) uint8
    mean = vae.reconstruct(x, [1] * 4)
    cold = vae.sample_posterior(x, [1] * 4, 1e-6, torch.Generator(), torch.Generator())
    assert torch.allclose(cold, mean, atol=1e-4)
    warm = vae.sample_posterior(x, [1] * 4, 1.0, torch.Generator(), torch.Generator())
    assert (warm - mean).abs().max() > 1e-2


def test_posterior_sets_are_prefix_stable_and_saved_by_their_rows(tmp_path: Path) -> None:
    images, rows = fundus_rows()
    sampler, vae = PosteriorSampler(rows, images), hierarchical_vae()
    big = sample_grade(vae, 1, 7, 1.0, 3, 4, sampler=sampler)  # batches of 4, 3
    assert np.array_equal(sample_grade(vae, 1, 3, 1.0, 3, 2, sampler=sampler), big[:3])
    assert not np.array_equal(sample_grade(vae, 1, 3, 1.0, 4, 2, sampler=sampler), big[:3])
    sampler.save(tmp_path / "s.npz")
    loaded = PosteriorSampler.load(tmp_path / "s.npz", images)
    assert loaded.sha256() == sampler.sha256() != PosteriorSampler({1: rows[1]}).sha256()
    assert np.array_equal(sample_grade(vae, 1, 7, 1.0, 3, 4, sampler=loaded), big)
