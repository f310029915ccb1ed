"""Grade thresholds for a regression grader, fitted to maximise quadratic weighted kappa.

The APTOS 2019 and EyePACS 2015 winners regressed the grade and cut the score at thresholds
tuned on held-out images ("optimised rounding"). Here: coordinate ascent over the four cut
points, each searched over the midpoints between scores, a few sweeps; deterministic, numpy.
"""

from __future__ import annotations

import numpy as np

from drvae.data.records import NUM_GRADES

DEFAULT_THRESHOLDS = tuple(g + 0.5 for g in range(NUM_GRADES - 1))  # plain rounding


def to_grades(scores: np.ndarray, thresholds: np.ndarray | tuple[float, ...]) -> np.ndarray:
    """(N,) continuous scores -> (N,) grades: the number of thresholds each score exceeds."""
    return np.searchsorted(np.sort(np.asarray(thresholds)), scores, side="right")


def qwk(grades: np.ndarray, predicted: np.ndarray, k: int = NUM_GRADES) -> float:
    """Quadratic weighted kappa (scikit-learn's `cohen_kappa_score(weights="quadratic")`)."""
    counts = np.bincount(grades * k + predicted, minlength=k * k).reshape(k, k).astype(float)
    weights = (np.arange(k)[:, None] - np.arange(k)[None, :]) ** 2.0
    expected = np.outer(counts.sum(1), counts.sum(0)) / counts.sum()
    denominator = (weights * expected).sum()
    return 1.0 - (weights * counts).sum() / denominator if denominator else 0.0


def cut_candidates(scores: np.ndarray, at_most: int) -> np.ndarray:
    """Midpoints between consecutive distinct scores (every way to split them), or
    `at_most` of them evenly spaced by rank."""
    distinct = np.unique(scores)
    midpoints = (distinct[:-1] + distinct[1:]) / 2
    if len(midpoints) > at_most:
        midpoints = midpoints[np.linspace(0, len(midpoints) - 1, at_most).round().astype(int)]
    return midpoints


def matching_thresholds(scores: np.ndarray, grades: np.ndarray) -> np.ndarray:
    """Cut points that give each grade its share of the images (score quantiles)."""
    shares = np.bincount(grades, minlength=NUM_GRADES)[: NUM_GRADES - 1].cumsum() / len(grades)
    return np.quantile(scores, shares)


def ascend(
    scores: np.ndarray, grades: np.ndarray, start: np.ndarray, candidates: np.ndarray, sweeps: int
) -> tuple[np.ndarray, float]:
    """Coordinate ascent of QWK from `start`, each cut point kept between its neighbours."""
    best, best_kappa = start.copy(), qwk(grades, to_grades(scores, start))
    for _ in range(sweeps):
        improved = False
        for i in range(len(best)):
            low = best[i - 1] if i else -np.inf
            high = best[i + 1] if i + 1 < len(best) else np.inf
            for value in candidates[(candidates > low) & (candidates < high)]:
                trial = best.copy()
                trial[i] = value
                kappa = qwk(grades, to_grades(scores, trial))
                if kappa > best_kappa + 1e-12:
                    best, best_kappa, improved = trial, kappa, True
        if not improved:
            break
    return best, best_kappa


def fit_thresholds(
    scores: np.ndarray, grades: np.ndarray, sweeps: int = 3, grid: int = 1000
) -> tuple[float, ...]:
    """The thresholds (ascending) that maximise QWK of `to_grades(scores)` against `grades`:
    coordinate ascent from plain rounding and from the grade shares' quantiles, the better
    kept; never worse than rounding on these images."""
    scores, grades = np.asarray(scores, dtype=float), np.asarray(grades, dtype=int)
    candidates = cut_candidates(scores, grid)
    starts = [np.array(DEFAULT_THRESHOLDS), matching_thresholds(scores, grades)]
    fits = [ascend(scores, grades, start, candidates, sweeps) for start in starts]
    best = max(fits, key=lambda fit: fit[1])[0]
    return tuple(float(t) for t in best)
