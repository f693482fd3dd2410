"""Redundancy measures on matrices with known answers."""

import math

import numpy as np
import pytest
from scipy.linalg import hadamard

from slimkern.analysis.redundancy import (
    explained_variance_slope,
    mean_abs_correlation,
    participation_ratio,
    redundancy_measures,
)

# Columns 1.. of an 8x8 Hadamard matrix: zero-mean, mutually orthogonal, all with the same norm, so
# X = H[:, cols] * scales has covariance eigenvalues proportional to scales**2 (and zero correlations).
H = hadamard(8).astype(float)


def test_mean_abs_correlation_known_values():
    a, b = H[:, 1], H[:, 2]
    assert mean_abs_correlation(np.stack([a, 2 * a, -a], axis=1)) == pytest.approx(1.0)
    assert mean_abs_correlation(H[:, 1:5]) == pytest.approx(0.0, abs=1e-12)
    # pairs: (a, -a) -> 1, (a, b) -> 0, (-a, b) -> 0
    assert mean_abs_correlation(np.stack([a, -a, b], axis=1)) == pytest.approx(1 / 3)
    # a constant column has no correlation and is left out
    assert mean_abs_correlation(np.stack([a, -a, np.ones(8)], axis=1)) == pytest.approx(1.0)
    # ... also when its mean is not exact in floating point (7 x 0.1: std 1.4e-17, not 0)
    c = np.arange(7.0)
    assert np.full(7, 0.1).std() > 0
    assert mean_abs_correlation(np.stack([c, -c, np.full(7, 0.1)], axis=1)) == pytest.approx(1.0)


def test_participation_ratio_known_values():
    assert participation_ratio(H[:, 1:4]) == pytest.approx(3.0)          # isotropic in 3 dims
    assert participation_ratio(H[:, 1:3] * [1.0, 0.0]) == pytest.approx(1.0)  # one direction
    assert participation_ratio(H[:, 1:3] * [2.0, 1.0]) == pytest.approx(25 / 17)  # eig 4, 1: 5^2 / 17


def test_explained_variance_slope_known_values():
    # eigenvalues proportional to 10^-i -> log10 ratio falls by exactly 1 per component
    scales = 10.0 ** (-np.arange(4) / 2)
    assert explained_variance_slope(H[:, 1:5] * scales) == pytest.approx(-1.0)
    assert explained_variance_slope(H[:, 1:5]) == pytest.approx(0.0, abs=1e-9)  # flat spectrum
    # eigenvalues 1, 1e-2, 1e-4 and 0: the zero is outside the non-zero spectrum, slope -2 over the rest
    assert explained_variance_slope(H[:, 1:5] * [1.0, 0.1, 0.01, 0.0]) == pytest.approx(-2.0)


def test_degenerate_features_give_nan_not_an_error():
    for measure in redundancy_measures(np.ones((5, 4))).values():
        assert math.isnan(measure)
    for measure in redundancy_measures(np.arange(4.0)[None]).values():  # a single image
        assert math.isnan(measure)
