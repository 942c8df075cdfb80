"""The mathematics of evaluation: distances between feature distributions and image similarity.

Everything here is pure tensor arithmetic, with no model, file or feature network in sight:

- FID (Heusel et al. 2017): the Fréchet distance between Gaussians fitted to two feature sets,
  ‖μ₁ − μ₂‖² + Tr(Σ₁ + Σ₂ − 2(Σ₁Σ₂)^½), in float64.
- KID (Bińkowski et al. 2018): the unbiased estimate of the squared MMD with the cubic polynomial
  kernel k(x, y) = (xᵀy / d + 1)³, averaged over random subsets.
- Precision and recall (Kynkäänniemi et al. 2019): the share of generated features inside the
  k-NN manifold of the real ones, and of real features inside that of the generated ones.
- MSE, PSNR and SSIM (Wang et al. 2004, an 11×11 Gaussian window of σ 1.5) for reconstructions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000
PR_NEIGHBOURS = 3  # the k of Kynkäänniemi et al.'s k-NN radii
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
_KID_BATCH_VALUES = 1 << 24  # kernel values per matrix in one batch of KID subsets
_DISTANCE_CHUNK = 1024  # rows of a pairwise distance matrix computed at once


@dataclass(frozen=True)
class GaussianStatistics:
    """The mean (d,) and covariance (d, d) of a feature set, in float64."""

    mean: torch.Tensor
    covariance: torch.Tensor


def gaussian_statistics(features: torch.Tensor) -> GaussianStatistics:
    """Mean and unbiased covariance of (n, d) features, n ≥ 2."""
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"need (n ≥ 2, d) features, got shape {tuple(features.shape)}")
    values = features.to(torch.float64)
    mean = values.mean(dim=0)
    centred = values - mean
    covariance = centred.T @ centred / (values.shape[0] - 1)
    return GaussianStatistics(mean, covariance)


def frechet_distance(first: GaussianStatistics, second: GaussianStatistics) -> float:
    """The Fréchet distance between two Gaussians: the FID when they are fitted to features.

    Tr((Σ₁Σ₂)^½) equals Tr((√Σ₁ Σ₂ √Σ₁)^½), and that product is symmetric positive
    semi-definite, so both square roots come from symmetric eigen-decompositions: no complex
    numbers, and no iteration that may fail to converge, as the general sqrtm of Σ₁Σ₂ can.
    """
    mean_term = (first.mean - second.mean).square().sum()
    root_first = _psd_sqrt(first.covariance)
    middle = root_first @ second.covariance @ root_first
    middle = (middle + middle.T) / 2  # symmetric up to rounding; make it exactly so
    trace_root = torch.linalg.eigvalsh(middle).clamp(min=0).sqrt().sum()
    trace = first.covariance.trace() + second.covariance.trace() - 2 * trace_root
    return float(mean_term + trace)


def feature_frechet_distance(first: torch.Tensor, second: torch.Tensor) -> float:
    """The FID of (n₁, d) and (n₂, d) features, computed from the features themselves.

    With A₁, A₂ the centred features scaled by 1/√(n − 1), Σ = AᵀA, and the non-zero
    eigenvalues of Σ₁Σ₂ are those of (A₁A₂ᵀ)(A₁A₂ᵀ)ᵀ: Tr((Σ₁Σ₂)^½) is the sum of the singular
    values of the n₁ × n₂ matrix A₁A₂ᵀ. Where there are fewer images than features, the
    covariances are singular and the route through d × d square roots adds the rounding of
    thousands of zero eigenvalues (a set against itself scores 1e-4, not 0); this route has none
    of them, and its matrix is smaller.
    """
    first_gaussian, second_gaussian = gaussian_statistics(first), gaussian_statistics(second)
    first_scaled = (first.to(torch.float64) - first_gaussian.mean) / (first.shape[0] - 1) ** 0.5
    second_scaled = (second.to(torch.float64) - second_gaussian.mean) / (second.shape[0] - 1) ** 0.5
    trace_root = torch.linalg.svdvals(first_scaled @ second_scaled.T).sum()
    mean_term = (first_gaussian.mean - second_gaussian.mean).square().sum()
    trace = first_gaussian.covariance.trace() + second_gaussian.covariance.trace() - 2 * trace_root
    return float(mean_term + trace)


def _psd_sqrt(matrix: torch.Tensor) -> torch.Tensor:
    """The symmetric square root of a symmetric positive semi-definite matrix."""
    eigenvalues, eigenvectors = torch.linalg.eigh(matrix)
    return (eigenvectors * eigenvalues.clamp(min=0).sqrt()) @ eigenvectors.T


def kernel_inception_distance(
    real: torch.Tensor,
    fake: torch.Tensor,
    *,
    subsets: int = KID_SUBSETS,
    subset_size: int = KID_SUBSET_SIZE,
    generator: torch.Generator | None = None,
) -> tuple[float, float | None]:
    """Mean and standard deviation over random subsets of the unbiased squared MMD (the KID).

    Subsets are drawn without replacement within each subset, of min(subset_size, n) features,
    and computed a batch of subsets at a time (a few hundred MB at most): with one product per
    subset, small sets cost more in per-call overhead than in arithmetic. Where both sets are no
    larger than a subset, every subset is the whole of both and they cannot differ: the standard
    deviation is then None, not a rounding error that looks like a measured spread.
    """
    size = min(subset_size, real.shape[0], fake.shape[0])
    if size < 2:
        raise ValueError("KID needs at least 2 features on each side")
    real64, fake64 = real.to(torch.float64), fake.to(torch.float64)
    generator = generator or torch.Generator().manual_seed(0)
    picks = [
        (
            torch.randperm(real64.shape[0], generator=generator)[:size],
            torch.randperm(fake64.shape[0], generator=generator)[:size],
        )
        for _ in range(subsets)
    ]
    per_batch = max(1, _KID_BATCH_VALUES // (size * size))
    estimates = []
    for start in range(0, subsets, per_batch):
        chunk = picks[start : start + per_batch]
        r = torch.stack([real_pick for real_pick, _ in chunk])  # (B, size)
        f = torch.stack([fake_pick for _, fake_pick in chunk])
        estimates.append(_unbiased_mmd2(real64[r], fake64[f]))  # (B, size, d) each
    values = torch.cat(estimates)
    subsets_differ = subsets > 1 and max(real.shape[0], fake.shape[0]) > size
    return float(values.mean()), float(values.std()) if subsets_differ else None


def unbiased_mmd2(x: torch.Tensor, y: torch.Tensor) -> float:
    """The unbiased squared MMD of two equal-sized samples under k(a, b) = (aᵀb / d + 1)³."""
    return float(_unbiased_mmd2(x[None], y[None])[0])


def _unbiased_mmd2(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """`unbiased_mmd2` of each pair of a batch: (B, m, d), (B, m, d) → (B,)."""
    m, dimension = x.shape[1:]
    k_xx, k_yy, k_xy = (
        (a @ b.transpose(1, 2) / dimension + 1) ** 3 for a, b in ((x, x), (y, y), (x, y))
    )  # (B, m, m) each
    # The diagonals k(xᵢ, xᵢ) are left out: that is what makes the estimate unbiased.
    diagonals = k_xx.diagonal(dim1=1, dim2=2).sum(1) + k_yy.diagonal(dim1=1, dim2=2).sum(1)
    within = (k_xx.sum((1, 2)) + k_yy.sum((1, 2)) - diagonals) / (m * (m - 1))
    return within - 2 * k_xy.mean((1, 2))


def precision_recall(
    real: torch.Tensor, fake: torch.Tensor, *, neighbours: int = PR_NEIGHBOURS
) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019).

    Each feature's radius is the distance to its k-th nearest neighbour in its own set; the
    manifold of a set is the union of balls of those radii. Precision is the share of fake
    features inside the real manifold, recall the share of real ones inside the fake manifold.
    """
    real32, fake32 = real.to(torch.float32), fake.to(torch.float32)
    real_radii = _kth_neighbour_distance(real32, neighbours)
    fake_radii = _kth_neighbour_distance(fake32, neighbours)
    precision = _share_inside(fake32, real32, real_radii)
    recall = _share_inside(real32, fake32, fake_radii)
    return precision, recall


def _kth_neighbour_distance(features: torch.Tensor, k: int) -> torch.Tensor:
    if features.shape[0] <= k:
        raise ValueError(f"precision/recall needs more than k={k} features, got {len(features)}")
    radii = []
    for start in range(0, features.shape[0], _DISTANCE_CHUNK):
        distances = torch.cdist(features[start : start + _DISTANCE_CHUNK], features)
        # The smallest distance is each point to itself (0): the k-th neighbour is at index k.
        radii.append(distances.kthvalue(k + 1, dim=1).values)
    return torch.cat(radii)


def _share_inside(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor) -> float:
    inside = 0
    for start in range(0, points.shape[0], _DISTANCE_CHUNK):
        distances = torch.cdist(points[start : start + _DISTANCE_CHUNK], centres)
        inside += int((distances <= radii[None, :]).any(dim=1).sum())
    return inside / points.shape[0]


def mean_pairwise_distance(features: torch.Tensor) -> float:
    """The mean Euclidean distance between distinct features: how spread out a sample is."""
    count = features.shape[0]
    if count < 2:
        raise ValueError("a diversity needs at least 2 features")
    distances = torch.cdist(features.to(torch.float64), features.to(torch.float64))
    return float(distances.sum() / (count * (count - 1)))


def mse(first: torch.Tensor, second: torch.Tensor) -> float:
    """Mean squared error of images in [0, 1]."""
    return float((first.to(torch.float64) - second.to(torch.float64)).square().mean())


def psnr(first: torch.Tensor, second: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB of images in [0, 1], from the mean squared error of each
    image, averaged over images; identical images give +inf."""
    errors = (first.to(torch.float64) - second.to(torch.float64)).square().flatten(1).mean(dim=1)
    return float((10 * torch.log10(1 / errors)).mean())


def ssim(first: torch.Tensor, second: torch.Tensor) -> float:
    """Mean structural similarity of (N, C, H, W) images in [0, 1] (Wang et al. 2004).

    Local statistics come from an 11×11 Gaussian window (σ 1.5) applied per channel over the
    valid region only; C₁ = (0.01·L)², C₂ = (0.03·L)² with L = 1. Images smaller than the
    window use a window of their own smaller side.
    """
    x, y = first.to(torch.float64), second.to(torch.float64)
    channels, height, width = x.shape[1:]
    size = min(SSIM_WINDOW, height, width)
    window = _gaussian_window(size, SSIM_SIGMA).to(x)
    kernel = window.expand(channels, 1, size, size)

    def local_mean(values: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.conv2d(values, kernel, groups=channels)

    mean_x, mean_y = local_mean(x), local_mean(y)
    variance_x = local_mean(x * x) - mean_x.square()
    variance_y = local_mean(y * y) - mean_y.square()
    covariance = local_mean(x * y) - mean_x * mean_y
    c1, c2 = 0.01**2, 0.03**2
    similarity = ((2 * mean_x * mean_y + c1) * (2 * covariance + c2)) / (
        (mean_x.square() + mean_y.square() + c1) * (variance_x + variance_y + c2)
    )
    return float(similarity.mean())


def _gaussian_window(size: int, sigma: float) -> torch.Tensor:
    offsets = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    weights = torch.exp(-offsets.square() / (2 * sigma * sigma))
    weights /= weights.sum()
    return torch.outer(weights, weights)  # (size, size), sums to 1
