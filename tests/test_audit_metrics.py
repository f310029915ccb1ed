"""The synthetic-image audit metrics on constructed cases: identical and shifted feature sets,
bootstrap intervals, MS-SSIM at 32 and 64 px, nearest neighbours against brute force,
memorisation shares, grade consistency, classifier features and the latent KL."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from drvae.metrics import audit, latent
from drvae.models import classifier_outputs as outputs
from drvae.models.classifier import GradeClassifier
from drvae.models.vae import to_unit

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def gaussian(n: int, d: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def noise_images(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


# ------------------------------------------------------------------ distribution distances


def test_identical_sets_score_perfectly() -> None:
    real = gaussian(400)
    assert abs(audit.frechet_distance(real, real.clone())) < 1e-3
    kid_mean, kid_std = audit.kernel_distance(real, real.clone(), subset_size=200, subsets=20)
    shifted_mean, _ = audit.kernel_distance(real, real + 5, subset_size=200, subsets=20)
    assert abs(kid_mean) < 0.01 * shifted_mean
    assert kid_std >= 0
    scores = audit.prdc(real, real.clone(), nearest_k=5)
    assert scores["precision"] == scores["recall"] == scores["coverage"] == 1.0
    assert 0.5 < scores["density"] < 1.5


def test_shifted_sets_are_far_apart() -> None:
    real, fake = gaussian(400, seed=0), gaussian(400, seed=1) + 5
    # same covariance and a mean shift of 5 in each of 8 dimensions: FD = 25 * 8
    assert audit.frechet_distance(real, real + 5) == pytest.approx(200, rel=1e-6)
    assert audit.frechet_distance(real, fake) > 150
    scores = audit.prdc(real, fake, nearest_k=5)
    assert scores["precision"] < 0.05 and scores["recall"] < 0.05
    assert scores["coverage"] < 0.05 and scores["density"] < 0.05


def test_prdc_is_chunk_independent_and_partly_overlapping() -> None:
    real, fake = gaussian(300, seed=0), gaussian(300, seed=1) + 1.0
    whole = audit.prdc(real, fake, chunk_size=1000)
    assert audit.prdc(real, fake, chunk_size=7) == pytest.approx(whole)
    assert 0.05 < whole["precision"] < 0.95 and 0.05 < whole["recall"] < 0.95


def test_frechet_distance_agrees_with_torchmetrics_fid() -> None:
    """The symmetric form equals torchmetrics' FID on the same features."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    real, fake = gaussian(300, 16, seed=0), gaussian(200, 16, seed=1) * 1.5 + 0.3
    fid = FrechetInceptionDistance(feature=audit._Precomputed(16))
    fid.update(real.double(), real=True)
    fid.update(fake.double(), real=False)
    assert audit.frechet_distance(real, fake) == pytest.approx(float(fid.compute()), rel=1e-6)


def test_kernel_distance_clips_subsets_and_is_seeded() -> None:
    real, fake = gaussian(20, seed=0), gaussian(30, seed=1)
    first = audit.kernel_distance(real, fake, subset_size=1000, subsets=10, seed=3)
    assert first == audit.kernel_distance(real, fake, subset_size=1000, subsets=10, seed=3)
    assert first != audit.kernel_distance(real, fake, subset_size=10, subsets=10, seed=4)


# ------------------------------------------------------------------ subset intervals


def mean_difference(real: torch.Tensor, fake: torch.Tensor) -> float:
    return float(fake.mean() - real.mean())


def test_subset_statistics_are_seeded_and_bracket_the_median() -> None:
    real, fake = gaussian(200, 1, seed=0), gaussian(200, 1, seed=1) + 0.5
    stats = {"diff": mean_difference}
    result = audit.subset_statistics(stats, real, fake, 50, draws=100, seed=7)
    assert result == audit.subset_statistics(stats, real, fake, 50, draws=100, seed=7)
    assert result != audit.subset_statistics(stats, real, fake, 50, draws=100, seed=8)
    diff = result["diff"]
    assert diff["low"] <= diff["median"] <= diff["high"]
    assert diff["median"] == pytest.approx(0.5, abs=0.15)
    with pytest.raises(ValueError, match="subset size 300"):
        audit.subset_statistics(stats, real, fake, 300)


def test_at_one_size_the_frechet_distance_of_like_sets_agrees() -> None:
    """A large sample and a small one from the same distribution, compared at the small
    one's size, give overlapping intervals: the sizes no longer decide the comparison."""
    reference = gaussian(400, 8, seed=0)
    big, small = gaussian(1000, 8, seed=1), gaussian(60, 8, seed=2)
    stats = {"fd": audit.frechet_distance}
    a = audit.subset_statistics(stats, reference, big, 50, draws=30, seed=0)["fd"]
    b = audit.subset_statistics(stats, reference, small, 50, draws=30, seed=0)["fd"]
    assert a["low"] < b["high"] and b["low"] < a["high"]
    assert audit.frechet_distance(reference, big) < 0.5 * b["median"]  # full sizes would not


# ------------------------------------------------------------------ MS-SSIM


@pytest.mark.parametrize(("size", "scales"), [(32, 2), (64, 3), (128, 4), (256, 5), (512, 5)])
def test_ms_ssim_settings(size: int, scales: int) -> None:
    betas, kernel = audit.ms_ssim_settings(size)
    assert len(betas) == scales and kernel == 11
    assert sum(betas) == pytest.approx(1)
    assert betas[0] / betas[1] == pytest.approx(0.0448 / 0.2856)


@pytest.mark.parametrize("size", [32, 64])
def test_ms_ssim_identical_images_give_one_and_noise_far_less(size: int) -> None:
    identical = np.repeat(noise_images(1, size), 6, axis=0)
    assert audit.mean_pairwise_ms_ssim(identical, max_pairs=10) == pytest.approx(1, abs=1e-4)
    assert audit.mean_pairwise_ms_ssim(noise_images(6, size), max_pairs=10) < 0.1


def test_ms_ssim_small_images_get_a_smaller_kernel() -> None:
    assert audit.ms_ssim_settings(8) == ((1.0,), 7)
    identical = np.repeat(noise_images(1, 8), 3, axis=0)
    assert audit.mean_pairwise_ms_ssim(identical) == pytest.approx(1, abs=1e-4)


def test_pairs_are_distinct_ordered_and_cover_all() -> None:
    i, j = audit._sample_pairs(7, 1000, seed=0)
    assert sorted(zip(i.tolist(), j.tolist(), strict=True)) == list(
        zip(*np.triu_indices(7, 1), strict=True)
    )
    i, j = audit._sample_pairs(10_000, 500, seed=0)
    assert len(set(zip(i.tolist(), j.tolist(), strict=True))) == 500
    assert (i < j).all() and (j < 10_000).all()


# ------------------------------------------------------------------ memorisation


def test_nearest_neighbours_match_brute_force() -> None:
    queries, reference = gaussian(37, 5, seed=0), gaussian(53, 5, seed=1)
    q, r = queries.double().numpy(), reference.double().numpy()
    brute = np.sqrt(((q[:, None] - r[None]) ** 2).sum(-1))  # (37, 53)
    distances, indices = audit.nearest_neighbours(queries, reference)
    np.testing.assert_array_equal(indices.numpy(), brute.argmin(1))
    np.testing.assert_allclose(distances.numpy(), brute.min(1), rtol=1e-5)
    chunked = audit.nearest_neighbours(queries, reference, chunk_size=4)
    assert torch.equal(chunked[0], distances) and torch.equal(chunked[1], indices)


def test_nearest_neighbours_of_exact_copies_are_at_zero() -> None:
    reference = torch.rand(300, 64 * 64 * 3, generator=torch.Generator().manual_seed(0))
    distances, indices = audit.nearest_neighbours(reference[[5, 17, 250]], reference)
    assert indices.tolist() == [5, 17, 250]
    assert distances.tolist() == [0, 0, 0]


def distances_like_heldout(n: int, seed: int) -> torch.Tensor:
    return 10 + torch.randn(n, generator=torch.Generator().manual_seed(seed)).abs()


def test_memorisation_flags_copies() -> None:
    heldout = distances_like_heldout(20_000, seed=0)
    copies = audit.memorisation(torch.zeros(500), heldout)
    assert copies["share_below_p1"] == copies["share_below_p5"] == 1.0
    assert copies["synthetic_median"] == 0 and copies["heldout_p1"] < copies["heldout_p5"]


def test_memorisation_of_a_fresh_draw_is_near_the_percentiles() -> None:
    heldout = distances_like_heldout(20_000, seed=0)
    fresh = audit.memorisation(distances_like_heldout(20_000, seed=1), heldout)
    assert 0.005 < fresh["share_below_p1"] < 0.02
    assert 0.04 < fresh["share_below_p5"] < 0.06
    assert fresh["synthetic_median"] == pytest.approx(fresh["heldout_median"], rel=0.01)


# ------------------------------------------------------------------ grade consistency


def pointing_to(grades: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.one_hot(grades, 5).float() * 0.9 + 0.02  # (N, 5), rows sum 1


def test_class_consistency_perfect() -> None:
    requested = torch.arange(5).repeat(20)
    result = audit.class_consistency(requested, pointing_to(requested))
    assert result["accuracy"] == result["qwk"] == 1.0
    for g in range(5):
        assert result[f"accuracy_grade{g}"] == 1.0
        assert result[f"probability_grade{g}"] == pytest.approx(0.92)


def test_class_consistency_wrong_grades() -> None:
    requested = torch.arange(5).repeat(20)
    result = audit.class_consistency(requested, pointing_to((requested + 2) % 5))
    assert result["accuracy"] == 0.0 and result["qwk"] < 0.2
    assert all(result[f"accuracy_grade{g}"] == 0.0 for g in range(5))
    assert result["probability_grade3"] == pytest.approx(0.02)


def test_class_consistency_omits_absent_grades() -> None:
    requested = torch.tensor([0, 0, 3, 3, 3])
    predicted = torch.tensor([0, 1, 3, 3, 4])
    result = audit.class_consistency(requested, pointing_to(predicted))
    assert {k for k in result if "grade" in k} == {
        "accuracy_grade0",
        "accuracy_grade3",
        "probability_grade0",
        "probability_grade3",
    }
    assert result["accuracy_grade0"] == 0.5 and result["accuracy_grade3"] == pytest.approx(2 / 3)
    assert all(math.isfinite(v) for v in result.values())


# ------------------------------------------------------------------ classifier outputs


@pytest.fixture(scope="module")
def classifier() -> GradeClassifier:
    torch.manual_seed(0)
    return GradeClassifier("test_resnet", image_size=32).train()  # train mode: must be restored


def test_classifier_outputs(classifier: GradeClassifier) -> None:
    images = noise_images(7, 32)
    features = outputs.classifier_features(classifier, images, batch_size=3)
    probabilities = outputs.classifier_probabilities(classifier, images, batch_size=3)
    assert features.shape == (7, classifier.net.num_features) and features.dtype == torch.float32
    assert probabilities.shape == (7, 5)
    torch.testing.assert_close(probabilities.sum(dim=1), torch.ones(7))
    assert classifier.training  # its mode is restored
    again = outputs.classifier_outputs(classifier, images, batch_size=256)
    torch.testing.assert_close(again[0], features)
    torch.testing.assert_close(again[1], probabilities)


def test_classifier_features_are_timm_pre_logits(classifier: GradeClassifier) -> None:
    images = noise_images(4, 32, seed=1)
    features = outputs.classifier_features(classifier, images)
    x = to_unit(torch.from_numpy(images).permute(0, 3, 1, 2))
    x = (x - classifier.mean) / classifier.std
    net = classifier.net.eval()
    with torch.no_grad():
        expected = net.forward_head(net.forward_features(x), pre_logits=True)
    classifier.train()
    torch.testing.assert_close(features, expected)


# ------------------------------------------------------------------ latent use


def test_kl_per_dimension() -> None:
    zeros = torch.zeros(4, 3)
    assert torch.equal(latent.kl_per_dimension(zeros, zeros), torch.zeros(3))
    mu = torch.tensor([[0.0, 1.0, 0.0], [2.0, 1.0, 0.0]])
    logvar = torch.tensor([[0.0, 0.0, math.log(2)], [0.0, 0.0, math.log(2)]])
    expected = torch.tensor([1.0, 0.5, 0.5 * (1 - math.log(2))])  # mu^2/2 mean; sigma^2 = 2
    torch.testing.assert_close(latent.kl_per_dimension(mu, logvar), expected)


def test_active_units() -> None:
    mu = gaussian(500, 4) * torch.tensor([1.0, 0.5, 0.01, 0.0]) + 3  # variances 1, .25, 1e-4, 0
    assert latent.active_units(mu, threshold=0.01) == 2
    assert latent.active_units(mu, threshold=0.5) == 1
    with pytest.raises(ValueError, match="at least 2"):
        latent.active_units(mu[:1], threshold=0.01)
