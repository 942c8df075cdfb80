"""FID, KID and precision/recall between any two image sets (`gentool fid A B`).

A set is a folder of images, an .npz file of images or of saved statistics, a built-in set, or a
run folder, whose model draws the images. Folders and image files go through the same decoding
and statistics cache as `gentool eval`. Statistics are saved as an .npz with pytorch-fid's `mu`
and `sigma`, so files from either tool can be read by the other; gentool adds the features (for
KID and precision/recall), the image count and the extractor that made them.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gentool.atomic import atomic_write
from gentool.checkpoint import RunFolder
from gentool.data import BUILTIN_PREFIX, load_dataset
from gentool.data.arrays import HeaderCheck, array_names, read_arrays
from gentool.errors import DataError, GentoolError
from gentool.evaluate import FeatureStatistics, compare_features, real_statistics, statistics_of
from gentool.features import FeatureExtractor, load_extractor
from gentool.metrics import GaussianStatistics, gaussian_statistics
from gentool.models import load_trained
from gentool.progress import Tracker
from gentool.registry import resolve
from gentool.run_files import CHECKPOINT_PREFIX, METRICS_FILE
from gentool.sampling import draw_uint8

FID_METRICS = ("fid", "kid", "pr")
RUN_SAMPLES = 5000  # images a run draws when neither --n nor the other set says how many
STATISTICS_FORMAT = 1
_STATISTICS_ARRAYS = ("mu", "sigma", "features", "count", "extractor", "format")


@dataclass(frozen=True)
class FidSettings:
    metrics: tuple[str, ...] = ("fid",)
    features: str = "inception"
    n: int | None = None  # at most this many images of each set; what a run draws
    image_size: int | None = None  # fit every image to this size first (None: as they are)
    seed: int = 0  # a run's samples and KID's subsets
    raw_weights: bool = False  # a run trained with --ema draws with its trained weights


@dataclass(frozen=True)
class ImageSet:
    """One side of the comparison, measured."""

    source: str
    kind: str  # "images", "statistics" or "run"
    count: int | None  # None: a statistics file that does not say
    statistics: FeatureStatistics
    cache_hit: bool | None  # whether the statistics came from the cache (None: not cacheable)

    def describe(self) -> dict[str, Any]:
        return {"source": self.source, "kind": self.kind, "count": self.count}


@dataclass(frozen=True)
class Comparison:
    values: dict[str, float]
    sets: tuple[ImageSet, ...]


def parse_fid_metrics(text: str | None) -> tuple[str, ...]:
    """FID always, and what --metrics adds to it."""
    chosen = ["fid"]
    for name in (text or "").split(","):
        name = name.strip()
        if name and name not in FID_METRICS:
            raise GentoolError(f"unknown --metrics {name!r}: choose from {', '.join(FID_METRICS)}")
        if name and name not in chosen:
            chosen.append(name)
    return tuple(chosen)


def compare_sets(
    first: str,
    second: str | None,
    settings: FidSettings,
    *,
    device: torch.device,
    save_statistics: Path | None = None,
    track: Tracker | None = None,
) -> Comparison:
    """Measure `first` (the reference) and `second`, compare them, and save the first set's
    statistics to `save_statistics` when asked. `second` may be None only when saving."""
    if settings.n is not None and settings.n < 2:
        raise GentoolError(f"--n must be at least 2, got {settings.n}")
    extractor = load_extractor(settings.features, device)
    sources = [first] if second is None else [first, second]
    kinds = [set_kind(source) for source in sources]
    if settings.image_size is None and "run" in kinds:
        # Images set beside a run's are fitted to the size its model draws, as gentool eval does.
        run_source = sources[kinds.index("run")]
        spec = RunFolder(Path(run_source).expanduser()).read().data.spec
        settings = replace(settings, image_size=spec.height if spec.height == spec.width else None)
    measured: dict[int, ImageSet] = {}
    # Sets with images of their own first: a run draws as many images as the other set holds.
    for index in sorted(range(len(sources)), key=lambda index: kinds[index] == "run"):
        other = measured.get(1 - index)
        draws = settings.n or (other.count if other is not None else None) or RUN_SAMPLES
        measured[index] = _measure_set(
            sources[index], kinds[index], extractor, settings, device, draws, track
        )
    sets = tuple(measured[index] for index in range(len(sources)))
    values: dict[str, float] = {}
    if len(sets) == 2:  # compared before anything is saved: a comparison that fails saves nothing
        values = compare_features(
            sets[0].statistics, sets[1].statistics, settings.metrics, seed=settings.seed
        )
    if save_statistics is not None:
        write_statistics(save_statistics, sets[0], extractor)
    return Comparison(values, sets)


def set_kind(source: str) -> str:
    """What `source` names: "run", "statistics" or "images"; a one-line error otherwise."""
    if source.startswith(BUILTIN_PREFIX):
        return "images"
    path = Path(source).expanduser()
    if path.is_dir():
        if RunFolder(path).exists():
            return "run"
        if (path / METRICS_FILE).exists() or any(path.glob(f"{CHECKPOINT_PREFIX}*")):
            raise DataError(
                f"{source!r} looks like a run folder (it has a checkpoint or {METRICS_FILE}) but "
                "holds no run.json: it is damaged; to compare its images, copy them elsewhere"
            )
        return "images"
    if not path.exists():
        raise DataError(f"{source!r} does not exist")
    if path.suffix.lower() != ".npz" or not path.is_file():
        raise DataError(
            f"cannot compare {source!r}: give a folder of images, a run folder, an .npz file of "
            "images or of statistics, or builtin:faces / builtin:shapes"
        )
    names = array_names(path, source)
    if {"mu", "sigma"} <= names:
        return "statistics"
    if "images" in names:
        return "images"
    raise DataError(
        f"{source!r} holds neither images ('images') nor statistics ('mu' and 'sigma'); "
        f"found: {', '.join(sorted(names)) or 'no arrays'}"
    )


def _measure_set(
    source: str,
    kind: str,
    extractor: FeatureExtractor,
    settings: FidSettings,
    device: torch.device,
    draws: int,
    track: Tracker | None,
) -> ImageSet:
    if kind == "statistics":
        return read_statistics(source, extractor)
    if kind == "run":
        images = _run_samples(Path(source).expanduser(), draws, settings, device)
        features = extractor(images, device, track=track, description=f"of {source}")
        return ImageSet(source, kind, draws, _checked(statistics_of(features), source), None)
    dataset = load_dataset(source, image_size=settings.image_size, limit=settings.n, track=track)
    if len(dataset) < 2:
        raise DataError(f"{source!r} has {len(dataset)} image: FID needs at least 2 in each set")
    statistics, cache_hit = real_statistics(dataset, extractor, track=track)
    return ImageSet(source, kind, len(dataset), statistics, cache_hit)


def _run_samples(
    run_dir: Path, count: int, settings: FidSettings, device: torch.device
) -> torch.Tensor:
    """`count` images from the run's model (its moving average, when it kept one), uint8."""
    record = RunFolder(run_dir).read()
    entry = resolve(record.plugin.name)
    assert entry.plugin is not None  # the registry resolves loaded plugins only
    if not entry.plugin.capabilities.sample:
        raise GentoolError(
            f"the run in {run_dir} is of {entry.name}, which does not sample new images: "
            "compare a folder of its reconstructions instead"
        )
    model, record, _ = load_trained(entry, run_dir, device, averaged=not settings.raw_weights)
    return draw_uint8(model, entry.plugin, record.data.spec, count, seed=settings.seed)


def _checked(statistics: FeatureStatistics, source: str) -> FeatureStatistics:
    """Features that are finite: a run whose model draws NaN says so, not FID nan."""
    features = statistics.features
    if features is not None and not bool(torch.isfinite(features).all()):
        raise GentoolError(f"the features of {source!r} are not finite: its images are broken")
    return statistics


def write_statistics(path: Path, image_set: ImageSet, extractor: FeatureExtractor) -> None:
    """Save a set's statistics as .npz: pytorch-fid's `mu` and `sigma`, and the features, count
    and extractor that KID, precision/recall and a later check need."""
    arrays: dict[str, np.ndarray] = {
        "mu": image_set.statistics.gaussian.mean.numpy(),
        "sigma": image_set.statistics.gaussian.covariance.numpy(),
        "extractor": np.array(extractor.identity),
        "format": np.array(STATISTICS_FORMAT),
    }
    if image_set.statistics.features is not None:
        arrays["features"] = image_set.statistics.features.numpy()
    if image_set.count is not None:
        arrays["count"] = np.array(image_set.count)
    with atomic_write(path) as temporary, temporary.open("wb") as file:
        np.savez(file, **arrays)


def read_statistics(source: str, extractor: FeatureExtractor) -> ImageSet:
    """A statistics .npz, checked against the extractor in use and against itself: statistics
    of other features are refused; a file that does not say which features it holds
    (pytorch-fid's) is taken at its word when its dimension fits, with a warning."""
    dimension = extractor.dimension
    path = Path(source).expanduser()
    arrays = read_arrays(path, source, _STATISTICS_ARRAYS, _fitting(dimension, source))
    _check_format(arrays.get("format"), source)
    _check_extractor(arrays.get("extractor"), extractor, source)
    gaussian = GaussianStatistics(
        _float_array(arrays["mu"], "mu", source), _float_array(arrays["sigma"], "sigma", source)
    )
    _check_covariance(gaussian.covariance, source)
    features = None
    if "features" in arrays:
        features = _float_array(arrays["features"], "features", source).float()
        if features.shape[0] < 2:
            raise DataError(f"'features' in {source!r} holds 1 row: at least 2 are needed")
        _check_agreement(gaussian, features, source)
    count = _count(arrays.get("count"), features, source)
    return ImageSet(source, "statistics", count, FeatureStatistics(features, gaussian), None)


def _fitting(dimension: int, source: str) -> HeaderCheck:
    """A check of each array's header against the features' dimension, before the array is
    read: a file that declares another shape is refused without inflating it."""

    def check(name: str, shape: tuple[int, ...], dtype: np.dtype) -> None:
        expected = {"mu": (dimension,), "sigma": (dimension, dimension)}.get(name)
        if name == "features":
            fits = len(shape) == 2 and shape[1] == dimension
            expected_text = f"(N, {dimension})"
        else:
            fits = expected is None or shape == expected
            expected_text = str(expected)
        if not fits:
            raise DataError(
                f"{name!r} in {source!r} has shape {shape}; {expected_text} fits these features"
            )
        if name in ("mu", "sigma", "features") and (dtype.kind != "f" or dtype.itemsize > 8):
            raise DataError(f"{name!r} in {source!r} is {dtype}; expected float16, 32 or 64")

    return check


def _check_format(saved: np.ndarray | None, source: str) -> None:
    if saved is None:
        return
    if saved.ndim != 0 or saved.dtype.kind not in "iu":
        raise DataError(f"'format' in {source!r} is not a format number: it is damaged")
    if int(saved) > STATISTICS_FORMAT:
        raise DataError(
            f"{source!r} is in statistics format {int(saved)}, newer than this gentool's "
            f"{STATISTICS_FORMAT}: upgrade gentool to read it"
        )


def _check_extractor(saved: np.ndarray | None, extractor: FeatureExtractor, source: str) -> None:
    if saved is None:
        warnings.warn(
            f"{source} does not say which network its statistics come from (pytorch-fid's "
            f"files do not); they are compared as {extractor.name} features",
            stacklevel=3,
        )
        return
    text = str(saved) if saved.dtype.kind == "U" and saved.ndim == 0 else ""
    try:
        identity = json.loads(text)
    except json.JSONDecodeError:
        identity = None
    if not isinstance(identity, dict):
        raise DataError(f"'extractor' in {source!r} is damaged: save the statistics again")
    if identity == json.loads(extractor.identity):
        return
    name, weights = identity.get("name", "unknown"), identity.get("weights", "unknown")
    if name == extractor.name:
        raise DataError(
            f"{source!r} holds {name} statistics made with other weights or preprocessing "
            f"(weights {weights}) than this gentool's: save the statistics again"
        )
    raise DataError(
        f"{source!r} holds statistics of other features ({name}, weights {weights}) than "
        f"--features {extractor.name} computes: use --features {name}"
    )


def _float_array(array: np.ndarray, name: str, source: str) -> torch.Tensor:
    """`array` as float64 in this machine's byte order, once every value is finite."""
    tensor = torch.from_numpy(array.astype(np.float64))
    if not bool(torch.isfinite(tensor).all()):
        raise DataError(f"{name!r} in {source!r} holds values that are not finite: it is damaged")
    return tensor


def _check_covariance(covariance: torch.Tensor, source: str) -> None:
    """A covariance is symmetric and positive semi-definite: anything else gives a FID that
    means nothing (negative, say). Cholesky of Σ + εI succeeds exactly for those, up to ε."""
    scale = float(covariance.abs().max()) or 1.0
    symmetric = float((covariance - covariance.T).abs().max()) <= 1e-6 * scale
    jitter = 1e-6 * scale * torch.eye(covariance.shape[0], dtype=covariance.dtype)
    semi_definite = int(torch.linalg.cholesky_ex(covariance + jitter).info) == 0
    if not (symmetric and semi_definite):
        shape = "not symmetric" if not symmetric else "not positive semi-definite"
        raise DataError(f"'sigma' in {source!r} is {shape}, so it is no covariance: it is damaged")


def _check_agreement(gaussian: GaussianStatistics, features: torch.Tensor, source: str) -> None:
    """The mean and covariance a file holds are those of the features it holds: FID reads the
    one, KID and precision/recall the other."""
    own = gaussian_statistics(features)
    for name, saved, computed in (
        ("mu", gaussian.mean, own.mean),
        ("sigma", gaussian.covariance, own.covariance),
    ):
        if float((saved - computed).abs().max()) > 1e-4 * (1 + float(computed.abs().max())):
            raise DataError(
                f"'{name}' in {source!r} is not that of the features the file holds: it is "
                "damaged; save the statistics again"
            )


def _count(saved: np.ndarray | None, features: torch.Tensor | None, source: str) -> int | None:
    if saved is None:
        return None if features is None else features.shape[0]
    if saved.ndim != 0 or saved.dtype.kind not in "iu" or int(saved) < 2:
        raise DataError(f"'count' in {source!r} is not a number of images: it is damaged")
    if features is not None and features.shape[0] != int(saved):
        raise DataError(
            f"{source!r} says {int(saved)} images but holds {features.shape[0]} features: "
            "it is damaged"
        )
    return int(saved)
