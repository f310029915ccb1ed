"""Synthetic-image audit metrics: fidelity, diversity, memorisation, grade fidelity.

Pure functions on tensors (features (N, D), distances (N,)) or uint8 images (N, S, S, 3).
Fréchet and kernel distances go through torchmetrics with an identity "feature extractor",
so any features (the grading classifier's, raw pixels) can be compared.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import Tensor
from torchmetrics.classification import MulticlassCohenKappa
from torchmetrics.functional.classification import multiclass_accuracy, multiclass_recall
from torchmetrics.functional.image import multiscale_structural_similarity_index_measure

# from the modules: torchmetrics.image exports these only with torch-fidelity (Inception) installed
from torchmetrics.image.kid import KernelInceptionDistance

Statistic = Callable[[Tensor, Tensor], float | dict[str, float]]
MS_SSIM_BETAS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)  # Wang et al. 2003, fine -> coarse
MS_SSIM_KERNEL = 11


# ------------------------------------------------------------------ distribution distances
class _Precomputed(torch.nn.Module):
    """Identity "feature extractor": torchmetrics reads the feature size from `num_features`."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, features: Tensor) -> Tensor:
        return features


def frechet_distance(real: Tensor, fake: Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (FID's formula):
    |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1^1/2 S2 S1^1/2)^1/2).

    Written with symmetric eigendecompositions rather than through torchmetrics, whose
    `eigvals` of the general matrix S1 S2 took 3.4x longer at 512 features on this CPU
    (3.2 s against 0.9 s a call while another job ran; same value to 1e-9), and the audit
    computes one per subset, about 1,200 per audit."""
    real, fake = real.double(), fake.double().to(real.device)
    s1, s2 = torch.cov(real.T), torch.cov(fake.T)  # (D, D)
    w, v = torch.linalg.eigh(s1)
    root = (v * w.clamp(min=0).sqrt()) @ v.T  # S1^1/2
    cross = torch.linalg.eigvalsh(root @ s2 @ root).clamp(min=0).sqrt().sum()
    mean = (real.mean(0) - fake.mean(0)).square().sum()
    return float(mean + s1.trace() + s2.trace() - 2 * cross)


def kernel_distance(
    real: Tensor, fake: Tensor, subset_size: int = 1000, subsets: int = 100, seed: int = 0
) -> tuple[float, float]:
    """KID (unbiased MMD^2, cubic polynomial kernel): mean and std over random subsets.

    `subset_size` is clipped to min(N, M), so it is safe at small sample sizes.
    """
    size = min(subset_size, len(real), len(fake))
    with warnings.catch_warnings():  # "will save all extracted features": that is the point
        warnings.simplefilter("ignore", UserWarning)
        metric = KernelInceptionDistance(
            feature=_Precomputed(real.shape[1]), subsets=subsets, subset_size=size
        )
    metric.update(real.double(), real=True)
    metric.update(fake.double().to(real.device), real=False)
    with torch.random.fork_rng(devices=[]):  # subsets come from the global CPU generator
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return float(mean), float(std)


def _distance_chunks(a: Tensor, b: Tensor, chunk_size: int) -> Iterator[tuple[int, Tensor]]:
    """Rows of the (N, M) Euclidean distance matrix, `chunk_size` rows at a time."""
    for start in range(0, len(a), chunk_size):
        yield start, torch.cdist(a[start : start + chunk_size], b)  # (c, M)


def _kth_neighbour_distance(x: Tensor, k: int, chunk_size: int) -> Tensor:
    """(N,) distance of each point to its k-th nearest other point of the same set."""
    chunks = _distance_chunks(x, x, chunk_size)  # each row's smallest distance is to itself
    return torch.cat([d.topk(k + 1, dim=1, largest=False).values[:, k] for _, d in chunks])


def prdc(
    real: Tensor, fake: Tensor, nearest_k: int = 5, chunk_size: int = 1024
) -> dict[str, float]:
    """Precision, recall, density and coverage (Naeem et al. 2020, "Reliable Fidelity and
    Diversity Metrics for Generative Models"), with k-NN balls around each sample."""
    fake = fake.to(real.device)
    real_radius = _kth_neighbour_distance(real, nearest_k, chunk_size)  # (N,)
    fake_radius = _kth_neighbour_distance(fake, nearest_k, chunk_size)  # (M,)
    balls_per_fake = torch.zeros(len(fake), device=real.device)  # real balls holding each fake
    recalled, covered = [], []
    for start, d in _distance_chunks(real, fake, chunk_size):  # (c, M)
        in_real_ball = d < real_radius[start : start + len(d), None]
        balls_per_fake += in_real_ball.sum(dim=0)
        covered.append(in_real_ball.any(dim=1))  # its nearest fake lies inside its ball
        recalled.append((d < fake_radius[None]).any(dim=1))
    return {
        "precision": float((balls_per_fake > 0).float().mean()),
        "recall": float(torch.cat(recalled).float().mean()),
        "density": float(balls_per_fake.mean() / nearest_k),
        "coverage": float(torch.cat(covered).float().mean()),
    }


def subset_statistics(
    statistics: dict[str, Statistic],
    reference: Tensor,
    sample: Tensor,
    size: int,
    draws: int = 100,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, dict[str, float]]:
    """Each statistic of (reference, `size` rows of sample drawn without replacement) over
    `draws` draws: median and percentile interval. Set distances depend on the sample size
    and are biased by the repeated points of a with-replacement bootstrap (the full-set value
    then often lies outside its own interval), so every comparison is made at one fixed size
    from distinct images: a synthetic set and a held-out real set compare fairly. A statistic
    may return several numbers by name (PRDC's four from one neighbour search)."""
    if not 2 <= size <= len(sample):
        raise ValueError(f"subset size {size} must lie in 2..{len(sample)}")
    generator = torch.Generator().manual_seed(seed)
    values: dict[str, list[float]] = {}
    for _ in range(draws):
        rows = torch.randperm(len(sample), generator=generator)[:size].to(sample.device)
        for name, statistic in statistics.items():
            value = statistic(reference, sample[rows])  # a number, or several by name (PRDC)
            for key, v in value.items() if isinstance(value, dict) else [(name, value)]:
                values.setdefault(key, []).append(v)
    tail = 50 * (1 - level)
    out = {}
    for name, drawn in values.items():
        low, median, high = np.percentile(drawn, [tail, 50, 100 - tail])
        out[name] = {"median": float(median), "low": float(low), "high": float(high)}
    return out


# ------------------------------------------------------------------ diversity
def ms_ssim_settings(size: int) -> tuple[tuple[float, ...], int]:
    """Betas and Gaussian kernel size for MS-SSIM on S-px images: the standard betas of the
    scales whose coarsest stays >= 16 px (as at 256 px with 5 scales), renormalised to sum
    to 1, and the 11-px kernel, smaller only below 16 px. 32 px: 2 scales; 64 px: 3."""
    scales = min(len(MS_SSIM_BETAS), max(1, int(math.log2(size / 16)) + 1))
    betas = MS_SSIM_BETAS[:scales]
    coarsest = size >> (scales - 1)
    kernel = min(MS_SSIM_KERNEL, coarsest - 1 - (coarsest % 2))  # odd, < the coarsest size
    return tuple(b / sum(betas) for b in betas), kernel


def _sample_pairs(n: int, max_pairs: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Up to `max_pairs` distinct pairs (i, j), i < j, drawn without replacement."""
    total = n * (n - 1) // 2
    k = np.random.default_rng(seed).choice(total, size=min(max_pairs, total), replace=False)
    starts = np.arange(n) * n - np.arange(n) * (np.arange(n) + 1) // 2  # row i's first index
    i = np.searchsorted(starts, k, side="right") - 1
    return i, k - starts[i] + i + 1


def mean_pairwise_ms_ssim(
    images: np.ndarray, max_pairs: int = 1000, seed: int = 0, batch_size: int = 256
) -> float:
    """Mean MS-SSIM over random pairs of uint8 (N, S, S, 3) images: within-set similarity
    (higher = less diverse; a collapsed generator approaches 1). Settings: `ms_ssim_settings`."""
    if len(images) < 2:
        raise ValueError(f"need at least 2 images, got {len(images)}")
    betas, kernel = ms_ssim_settings(images.shape[1])
    first, second = _sample_pairs(len(images), max_pairs, seed)
    scores = []
    for start in range(0, len(first), batch_size):
        i, j = (idx[start : start + batch_size] for idx in (first, second))
        a, b = (torch.from_numpy(images[idx]).permute(0, 3, 1, 2) / 255 for idx in (i, j))
        scores.append(
            multiscale_structural_similarity_index_measure(
                a, b, kernel_size=kernel, betas=betas, data_range=1.0, reduction="none"
            )
        )
    return float(torch.cat(scores).mean())


# ------------------------------------------------------------------ memorisation
def nearest_neighbours(
    queries: Tensor, reference: Tensor, chunk_size: int = 1024
) -> tuple[Tensor, Tensor]:
    """Euclidean distance (N,) and index (N,) of each query's nearest reference row, exact and
    chunked over the queries (memory ~ chunk_size x M besides the inputs)."""
    reference = reference.to(queries.device)
    indices = torch.cat(
        [d.argmin(dim=1) for _, d in _distance_chunks(queries, reference, chunk_size)]
    )
    # cdist's matrix-product form leaves ~0.05 on an exact 64x64x3 copy: recompute by difference
    distances = torch.cat(
        [
            (queries[s : s + chunk_size] - reference[indices[s : s + chunk_size]]).norm(dim=1)
            for s in range(0, len(queries), chunk_size)
        ]
    )
    return distances, indices


def memorisation(synthetic_to_train: Tensor, heldout_to_train: Tensor) -> dict[str, float]:
    """Share of synthetic images closer to a training image than the 1st / 5th percentile of
    held-out real images' distances: well above 0.01 / 0.05 suggests copies."""
    heldout, synthetic = heldout_to_train.double(), synthetic_to_train.double()
    p1, p5 = torch.quantile(heldout, torch.tensor([0.01, 0.05], dtype=torch.float64))
    return {
        "heldout_p1": float(p1),
        "heldout_p5": float(p5),
        "share_below_p1": float((synthetic < p1).double().mean()),
        "share_below_p5": float((synthetic < p5).double().mean()),
        "synthetic_median": float(synthetic.median()),
        "heldout_median": float(heldout.median()),
    }


# ------------------------------------------------------------------ grade fidelity
def class_consistency(requested: Tensor, probabilities: Tensor) -> dict[str, float]:
    """How well the classifier recognises the requested grade of synthetic images: accuracy
    overall and per grade present, quadratic weighted kappa, and mean probability of the
    requested grade per grade present."""
    k = probabilities.shape[1]
    requested = requested.long()
    kappa = MulticlassCohenKappa(k, weights="quadratic").to(probabilities.device)
    result = {
        "accuracy": float(multiclass_accuracy(probabilities, requested, k, average="micro")),
        "qwk": float(kappa(probabilities, requested)),
    }
    recall = multiclass_recall(probabilities, requested, k, average="none")  # (K,)
    p_requested = probabilities.gather(1, requested[:, None]).squeeze(1)  # (N,)
    for g in requested.unique().tolist():  # absent grades omitted: no NaN
        result[f"accuracy_grade{g}"] = float(recall[g])
        result[f"probability_grade{g}"] = float(p_requested[requested == g].mean())
    return result
