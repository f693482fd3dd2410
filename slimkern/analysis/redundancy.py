"""The paper's redundancy measures of a feature matrix ``[N, d]`` (one row per image).

- :func:`mean_abs_correlation`: mean |Pearson correlation| over all pairs of distinct feature
  dimensions (constant dimensions have no correlation and are left out).
- :func:`explained_variance_slope`: least-squares slope of ``log10`` of the explained-variance ratio
  against the component index (1, 2, ...), over the non-zero spectrum of the feature covariance
  (eigenvalues above ``max(N, d) * eps * largest``). Steeper (more negative) = variance in fewer directions.
- :func:`participation_ratio`: effective dimensionality ``(sum l)^2 / sum l^2`` of the covariance
  eigenvalues ``l``: ``d`` for isotropic features, 1 when one direction holds all variance.

Degenerate input (fewer than two images, every dimension constant) gives NaN for that measure
rather than an error, so one collapsed width does not stop a sweep.
"""

from __future__ import annotations

import numpy as np


def covariance_spectrum(features: np.ndarray) -> np.ndarray:
    """Non-zero eigenvalues of the feature covariance, largest first (float64)."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"features must be [N, d], got shape {x.shape}")
    if len(x) < 2:
        return np.zeros(0)
    x = x - x.mean(axis=0)
    singular = np.linalg.svd(x, compute_uv=False)
    eig = singular**2 / (len(x) - 1)
    if not eig.size or eig[0] <= 0:
        return np.zeros(0)
    return eig[eig > max(x.shape) * np.finfo(np.float64).eps * eig[0]]


def mean_abs_correlation(features: np.ndarray) -> float:
    x = np.asarray(features, dtype=np.float64)
    if len(x) < 2:
        return float("nan")
    x = x[:, np.ptp(x, axis=0) > 0]  # exact: a constant 0.1 column has std 1e-17 from rounding, not 0
    if x.shape[1] < 2:
        return float("nan")
    corr = np.corrcoef(x, rowvar=False)
    off = ~np.eye(len(corr), dtype=bool)
    return float(np.abs(corr[off]).mean())


def explained_variance_slope(features: np.ndarray) -> float:
    eig = covariance_spectrum(features)
    if len(eig) < 2:
        return float("nan")
    ratio = eig / eig.sum()
    index = np.arange(1, len(eig) + 1)
    return float(np.polyfit(index, np.log10(ratio), 1)[0])


def participation_ratio(features: np.ndarray) -> float:
    eig = covariance_spectrum(features)
    if not len(eig):
        return float("nan")
    return float(eig.sum() ** 2 / (eig**2).sum())


def redundancy_measures(features: np.ndarray) -> dict[str, float]:
    """All three measures of ``features`` ``[N, d]``, keyed as in ``summary.json``."""
    return {"mean_abs_correlation": mean_abs_correlation(features),
            "explained_variance_slope": explained_variance_slope(features),
            "participation_ratio": participation_ratio(features)}
