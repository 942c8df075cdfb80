"""The metrics against independent float64 computations with numpy and scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch

from gentool.metrics import (
    feature_frechet_distance,
    frechet_distance,
    gaussian_statistics,
    kernel_inception_distance,
    mean_pairwise_distance,
    mse,
    precision_recall,
    psnr,
    ssim,
    unbiased_mmd2,
)


def reference_fid(first: np.ndarray, second: np.ndarray) -> float:
    """FID as the papers' reference code computes it, with scipy's general sqrtm."""
    mean_1, mean_2 = first.mean(axis=0), second.mean(axis=0)
    cov_1, cov_2 = np.cov(first, rowvar=False), np.cov(second, rowvar=False)
    root = scipy.linalg.sqrtm(cov_1 @ cov_2)
    root = root.real
    return float(((mean_1 - mean_2) ** 2).sum() + np.trace(cov_1 + cov_2 - 2 * root))


def reference_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """The unbiased MMD² written out as a double sum over distinct pairs."""
    m, d = x.shape

    def kernel(a, b):
        return (a @ b / d + 1) ** 3

    total_xx = sum(kernel(x[i], x[j]) for i in range(m) for j in range(m) if i != j)
    total_yy = sum(kernel(y[i], y[j]) for i in range(m) for j in range(m) if i != j)
    total_xy = sum(kernel(x[i], y[j]) for i in range(m) for j in range(m))
    return total_xx / (m * (m - 1)) + total_yy / (m * (m - 1)) - 2 * total_xy / (m * m)


@pytest.mark.parametrize("dimension", [2, 16, 64])
def test_fid_matches_scipy_sqrtm_in_float64(dimension):
    rng = np.random.default_rng(dimension)
    first = rng.normal(size=(400, dimension)) @ rng.normal(size=(dimension, dimension))
    second = rng.normal(0.3, 1.5, size=(300, dimension)) @ rng.normal(size=(dimension, dimension))
    ours = frechet_distance(
        gaussian_statistics(torch.from_numpy(first)), gaussian_statistics(torch.from_numpy(second))
    )
    assert ours == pytest.approx(reference_fid(first, second), rel=1e-6)


def test_fid_handles_singular_covariances_like_scipy():
    rng = np.random.default_rng(1)
    first = rng.normal(size=(20, 64))  # fewer samples than dimensions: rank-deficient
    second = rng.normal(size=(20, 64)) + 0.5
    ours = frechet_distance(
        gaussian_statistics(torch.from_numpy(first)), gaussian_statistics(torch.from_numpy(second))
    )
    assert ours == pytest.approx(reference_fid(first, second), rel=1e-4)


@pytest.mark.parametrize(("rows", "other_rows"), [(20, 20), (25, 40), (300, 200)])
def test_fid_from_features_matches_scipy_sqrtm_and_the_gaussian_route(rows, other_rows):
    rng = np.random.default_rng(rows)
    first = rng.normal(size=(rows, 64)) @ rng.normal(size=(64, 64))
    second = rng.normal(0.5, 1.2, size=(other_rows, 64)) @ rng.normal(size=(64, 64))
    ours = feature_frechet_distance(torch.from_numpy(first), torch.from_numpy(second))
    assert ours == pytest.approx(reference_fid(first, second), rel=1e-4)
    through_gaussians = frechet_distance(
        gaussian_statistics(torch.from_numpy(first)), gaussian_statistics(torch.from_numpy(second))
    )
    assert ours == pytest.approx(through_gaussians, rel=1e-6)


def test_fid_from_features_of_a_set_with_itself_is_zero_where_covariances_are_singular():
    features = torch.from_numpy(np.random.default_rng(4).normal(size=(30, 256)))
    assert abs(feature_frechet_distance(features, features)) < 1e-9
    singular = gaussian_statistics(features)
    assert abs(frechet_distance(singular, singular)) > 1e-9  # what the route above avoids


def test_fid_of_a_set_with_itself_is_zero_and_against_noise_large():
    rng = np.random.default_rng(2)
    real = torch.from_numpy(rng.normal(size=(2000, 32)) @ rng.normal(size=(32, 32)))
    stats = gaussian_statistics(real)
    assert abs(frechet_distance(stats, stats)) < 1e-8
    noise = torch.from_numpy(rng.uniform(-5, 5, size=(2000, 32)))
    assert frechet_distance(stats, gaussian_statistics(noise)) > 100


def test_kid_estimate_matches_the_double_sum():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(30, 8)), rng.normal(0.5, 1, size=(30, 8))
    ours = unbiased_mmd2(torch.from_numpy(x), torch.from_numpy(y))
    assert ours == pytest.approx(reference_mmd2(x, y), rel=1e-10)


def test_kid_is_near_zero_for_one_distribution_and_positive_for_two():
    rng = np.random.default_rng(4)
    real = torch.from_numpy(rng.normal(size=(600, 16)))
    same = torch.from_numpy(rng.normal(size=(600, 16)))
    shifted = torch.from_numpy(rng.normal(1.0, 1, size=(600, 16)))
    mean_same, std_same = kernel_inception_distance(real, same, subsets=20, subset_size=200)
    mean_shifted, _ = kernel_inception_distance(real, shifted, subsets=20, subset_size=200)
    assert abs(mean_same) < 3 * std_same + 1e-3  # unbiased: centred on 0, may be negative
    assert mean_shifted > 20 * max(std_same, 1e-3)


def test_precision_and_recall_separate_quality_from_coverage():
    rng = np.random.default_rng(5)
    real = torch.from_numpy(rng.normal(size=(500, 4)))
    same = torch.from_numpy(rng.normal(size=(500, 4)))
    # A collapsed generator: every sample close to one real region.
    collapsed = torch.from_numpy(rng.normal(size=(500, 4)) * 0.1 + np.array([0.5, 0, 0, 0]))
    far = torch.from_numpy(rng.normal(size=(500, 4)) + 10)
    precision, recall = precision_recall(real, same)
    assert precision > 0.8 and recall > 0.8
    precision, recall = precision_recall(real, collapsed)
    assert precision > 0.9 and recall < 0.2
    assert precision_recall(real, far) == (0.0, 0.0)


def test_mean_pairwise_distance_matches_numpy():
    rng = np.random.default_rng(6)
    features = rng.normal(size=(50, 5))
    expected = np.mean(
        [
            np.linalg.norm(a - b)
            for i, a in enumerate(features)
            for j, b in enumerate(features)
            if i != j
        ]
    )
    assert mean_pairwise_distance(torch.from_numpy(features)) == pytest.approx(expected)


def reference_ssim(x: np.ndarray, y: np.ndarray) -> float:
    """SSIM of two (H, W) images with an 11×11 Gaussian window over the valid region, written
    as explicit window sums over every position."""
    offsets = np.arange(11) - 5
    weights = np.exp(-(offsets**2) / (2 * 1.5**2))
    window = np.outer(weights, weights) / np.outer(weights, weights).sum()
    c1, c2 = 0.01**2, 0.03**2
    values = []
    for top in range(x.shape[0] - 10):
        for left in range(x.shape[1] - 10):
            a, b = x[top : top + 11, left : left + 11], y[top : top + 11, left : left + 11]
            mean_a, mean_b = (window * a).sum(), (window * b).sum()
            var_a = (window * (a - mean_a) ** 2).sum()
            var_b = (window * (b - mean_b) ** 2).sum()
            cov = (window * (a - mean_a) * (b - mean_b)).sum()
            values.append(
                ((2 * mean_a * mean_b + c1) * (2 * cov + c2))
                / ((mean_a**2 + mean_b**2 + c1) * (var_a + var_b + c2))
            )
    return float(np.mean(values))


def test_ssim_is_one_for_identical_images_and_matches_the_window_sums():
    rng = np.random.default_rng(7)
    x = rng.uniform(size=(20, 20))
    y = np.clip(x + rng.normal(0, 0.2, size=x.shape), 0, 1)
    x_t, y_t = torch.from_numpy(x)[None, None], torch.from_numpy(y)[None, None]
    assert ssim(x_t, x_t) == pytest.approx(1.0)
    assert ssim(x_t, y_t) == pytest.approx(reference_ssim(x, y), rel=1e-9)
    assert ssim(x_t, y_t) < 0.9


def test_mse_and_psnr_follow_their_definitions():
    x = torch.zeros(2, 1, 4, 4)
    y = torch.full((2, 1, 4, 4), 0.1)
    assert mse(x, y) == pytest.approx(0.01)
    assert psnr(x, y) == pytest.approx(20.0)
    assert math.isinf(psnr(x, x))


def test_kid_is_the_same_whether_subsets_are_batched_or_not(monkeypatch):
    import gentool.metrics

    rng = np.random.default_rng(8)
    real, fake = (
        torch.from_numpy(rng.normal(size=(90, 6))),
        torch.from_numpy(rng.normal(size=(80, 6))),
    )
    batched = kernel_inception_distance(real, fake, subsets=7, subset_size=40)
    monkeypatch.setattr(gentool.metrics, "_KID_BATCH_VALUES", 1)  # one subset at a time
    one_by_one = kernel_inception_distance(real, fake, subsets=7, subset_size=40)
    assert one_by_one == pytest.approx(batched, rel=1e-12)


def test_kid_has_no_standard_deviation_where_every_subset_is_the_whole_of_both_sets():
    rng = np.random.default_rng(9)
    real, fake = (
        torch.from_numpy(rng.normal(size=(50, 6))),
        torch.from_numpy(rng.normal(size=(50, 6))),
    )
    mean, spread = kernel_inception_distance(real, fake, subsets=10, subset_size=1000)
    assert spread is None  # each subset is a permutation of all 50: the same estimate
    assert mean == pytest.approx(unbiased_mmd2(real, fake), rel=1e-9)
    _, spread_of_halves = kernel_inception_distance(real, fake, subsets=10, subset_size=25)
    _, spread_of_more = kernel_inception_distance(real, fake[:40], subsets=10, subset_size=1000)
    assert spread_of_halves > 0 and spread_of_more > 0
