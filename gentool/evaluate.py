"""Evaluating a trained model: FID, KID, precision/recall and reconstruction metrics.

The statistics of the real images are cached under ``$GENTOOL_CACHE/stats`` (safetensors for the
features, mean and covariance; JSON describing them), keyed by a hash of the data's content
fingerprint (which covers the preprocessing), the image count and the feature extractor's
identity (which covers its weights), so a second evaluation against the same data extracts only
the generated images' features.
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from gentool.api import DataSpec, ModelPlugin
from gentool.atomic import atomic_write, write_text
from gentool.checkpoint import RunFolder
from gentool.data import (
    BUILTIN_PREFIX,
    DEFAULT_IMAGE_SIZE,
    ImageDataset,
    builtin_arrays,
    cache_dir,
    check_fits,
    labels_by_name,
    load_dataset,
    to_value_range,
)
from gentool.devices import resolve_device
from gentool.errors import GentoolError, PluginError
from gentool.features import FeatureExtractor, load_extractor
from gentool.jsonl import append_line
from gentool.label_accuracy import label_accuracy, unknown_classes
from gentool.limits import check_allocation
from gentool.metrics import (
    PR_NEIGHBOURS,
    GaussianStatistics,
    feature_frechet_distance,
    frechet_distance,
    gaussian_statistics,
    kernel_inception_distance,
    mean_pairwise_distance,
    mse,
    precision_recall,
    psnr,
    ssim,
)
from gentool.model_calls import call_evaluation_metrics, call_reconstruct
from gentool.models import image_size_of, load_trained, plugin_for_config
from gentool.progress import Tracker
from gentool.registry import PluginEntry
from gentool.sampling import draw_uint8, evaluating

METRIC_NAMES = ("fid", "kid", "pr", "recon", "labels")
SAMPLING_METRICS = frozenset({"fid", "kid", "pr"})
MIN_IMAGES = 10  # fewer leave precision/recall's k-NN radii and KID's subsets meaningless
DIVERSITY_COUNT = 1000  # features whose mean pairwise distance measures a sample's diversity
_STATS_FORMAT = 1  # bump when the cached statistics change meaning
_RECONSTRUCT_BATCH = 250
# What an evaluation reports, and metrics.jsonl's own fields: a model's metrics take other names.
RESERVED_METRIC_NAMES = frozenset(
    {"n", "features", "seed", "fid", "kid", "kid_std", "precision", "recall", "diversity",
     "diversity_real", "sampler", "mse", "psnr", "ssim", "held_out", "label_accuracy",
     "label_accuracy_by_class", "event", "epoch", "step", "phase"}
)  # fmt: skip


@dataclass(frozen=True)
class EvalSettings:
    """What to measure, on how many images, with which features."""

    metrics: tuple[str, ...]
    n: int
    features: str = "builtin"
    seed: int = 0
    # Chosen by the user, not by default: then a metric that does not apply to the run's data
    # (label accuracy of classes the classifier does not know) is an error, not left out.
    chosen: bool = False


@dataclass(frozen=True)
class EvalResult:
    run: RunFolder
    epoch: int
    step: int
    values: dict[str, Any]  # metric name → value, and the settings it was measured with
    cache_hit: bool | None  # whether the real statistics came from the cache (None: not needed)


def default_metrics(plugin: ModelPlugin) -> tuple[str, ...]:
    """Every metric the model's capabilities allow (label accuracy where the run's classes are
    built-in shapes: `measure` leaves it out for other data)."""
    chosen = ["fid", "kid", "pr"] if plugin.capabilities.sample else []
    if plugin.capabilities.reconstruct:
        chosen.append("recon")
    if plugin.capabilities.sample and plugin.capabilities.conditional:
        chosen.append("labels")
    return tuple(chosen)


def parse_metrics(
    text: str | None, plugin: ModelPlugin, flag: str = "--metrics"
) -> tuple[str, ...]:
    """A comma-separated `flag` value, checked against the names and the model."""
    if text is None:
        return default_metrics(plugin)
    chosen = tuple(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))
    unknown = [name for name in chosen if name not in METRIC_NAMES]
    if unknown or not chosen:
        raise GentoolError(
            f"unknown {flag} {', '.join(unknown) or repr(text)}: choose from "
            f"{', '.join(METRIC_NAMES)}"
        )
    check_metrics_apply(chosen, plugin, flag)
    return chosen


def check_metrics_apply(chosen: tuple[str, ...], plugin: ModelPlugin, flag: str) -> None:
    """Refuse metrics the model's capabilities (for its config) rule out."""
    if not plugin.capabilities.sample and SAMPLING_METRICS & set(chosen):
        raise GentoolError(
            f"{plugin.name} does not sample new images, so fid, kid and pr do not apply; "
            f"use {flag} recon"
        )
    if not plugin.capabilities.reconstruct and "recon" in chosen:
        raise GentoolError(f"{plugin.name} does not reconstruct images, so recon does not apply")
    conditional_sampler = plugin.capabilities.sample and plugin.capabilities.conditional
    if "labels" in chosen and not conditional_sampler:
        raise GentoolError(
            f"{plugin.name} does not draw images of a class it is asked for, so labels (label "
            "accuracy) does not apply"
        )


def evaluate_run(
    entry: PluginEntry,
    *,
    run_dir: Path | None,
    data: str | None,
    settings: EvalSettings,
    device: str,
    raw_weights: bool = False,
    track: Tracker | None = None,
) -> EvalResult:
    """Measure a trained run and append the values to its metrics.jsonl.

    Runs trained with --ema are measured on their moving average, the weights that sample,
    unless `raw_weights`.
    """
    plugin = entry.plugin
    assert plugin is not None  # the registry resolves loaded plugins only
    model, record, run = load_trained(
        entry, run_dir, resolve_device(device), averaged=not raw_weights
    )
    config = run.read_config(plugin, record)
    plugin = plugin_for_config(plugin, config)
    check_metrics_apply(settings.metrics, plugin, "--metrics")
    source = data or record.data.source
    # Other data than the run's counts as held out; the run's own data is extended past it.
    held_out_from = record.data.count if source == record.data.source else None
    evaluation = measure(
        model,
        plugin,
        record.data.spec,
        source=source,
        image_size=image_size_of(config),
        settings=settings,
        held_out_from=held_out_from,
        track=track,
    )
    values = {"event": "eval", **evaluation.values}
    epoch, step = record.progress.epoch, record.progress.global_step
    append_line(run.metrics_file, {"epoch": epoch, "step": step, **values})
    return EvalResult(run, epoch, step, values, evaluation.cache_hit)


@dataclass(frozen=True)
class Measurement:
    values: dict[str, Any]
    cache_hit: bool | None


def measure(
    model: torch.nn.Module,
    plugin: ModelPlugin,
    spec: DataSpec,
    *,
    source: str,
    image_size: int | None,
    settings: EvalSettings,
    held_out_from: int | None,
    track: Tracker | None = None,
) -> Measurement:
    """The chosen metrics of `model` against `source`.

    Generated images are drawn with a fixed seed (one class after another for conditional
    models). Reconstructions are of held-out images where there are any: built-in sets are
    extended past the `held_out_from` images trained on; other data is used as given.
    """
    if settings.n < MIN_IMAGES:
        raise GentoolError(f"--n must be at least {MIN_IMAGES}, got {settings.n}")
    device = next(model.parameters()).device
    values: dict[str, Any] = {"n": settings.n, "features": settings.features}
    cache_hit = None
    if SAMPLING_METRICS & set(settings.metrics):
        extractor = load_extractor(settings.features, device)
        check_allocation(  # real and generated features, float32
            2 * settings.n * extractor.dimension * 4,
            f"the features of {settings.n} real and {settings.n} generated images",
            "lower --n",
        )
        real = load_dataset(source, image_size=image_size, limit=settings.n, track=track)
        check_fits(real.spec, spec, source, conditional=plugin.capabilities.conditional)
        real_stats, cache_hit = real_statistics(real, extractor, track=track)
        fake_images = draw_uint8(model, plugin, spec, settings.n, seed=settings.seed)
        fake = statistics_of(extractor(fake_images, device, track=track, description="generated"))
        values.update(compare_features(real_stats, fake, settings.metrics, seed=settings.seed))
        values["diversity"] = mean_pairwise_distance(fake.features[:DIVERSITY_COUNT])
        values["diversity_real"] = mean_pairwise_distance(real_stats.features[:DIVERSITY_COUNT])
        if plugin.capabilities.baseline_sampler:
            values["sampler"] = "baseline"  # what fid, kid and pr measured: see Capabilities

    if "labels" in settings.metrics and (settings.chosen or not unknown_classes(spec.class_names)):
        values.update(label_accuracy(model, plugin, spec, settings.n, seed=settings.seed))

    reconstructed = (plugin, spec, source, image_size, settings.n, held_out_from)
    if "recon" in settings.metrics:
        originals, labels, held_out = _data_to_reconstruct(*reconstructed)
        values.update(reconstruction_metrics(model, plugin, originals, labels))
        values["held_out"] = held_out
    if callable(getattr(model, "evaluation_metrics", None)):
        originals, labels, _ = _data_to_reconstruct(*reconstructed)
        own = model_metrics(model, plugin, originals, labels)
        clashes = sorted(set(own) & RESERVED_METRIC_NAMES)
        if clashes:
            raise PluginError(
                f"{plugin.name}: evaluation_metrics names {', '.join(clashes)}, which gentool "
                "reports itself: rename them"
            )
        values.update(own)
    return Measurement(values, cache_hit)


@dataclass(frozen=True)
class FeatureStatistics:
    """An image set's features and the Gaussian fitted to them. A statistics file saved by
    other tools may hold only the Gaussian: then `features` is None, and only FID applies."""

    features: torch.Tensor | None  # (n, d) float32
    gaussian: GaussianStatistics


def statistics_of(features: torch.Tensor) -> FeatureStatistics:
    return FeatureStatistics(features, gaussian_statistics(features))


def real_statistics(
    dataset: ImageDataset, extractor: FeatureExtractor, *, track: Tracker | None = None
) -> tuple[FeatureStatistics, bool]:
    """The real images' features and Gaussian, from the cache when it has them; and whether
    it did. A damaged entry is recomputed; a cache that cannot be written costs a warning."""
    key = statistics_key(dataset, extractor)
    folder = stats_dir()
    tensors_path, description_path = folder / f"{key}.safetensors", folder / f"{key}.json"
    stored = _cached_statistics(tensors_path, key, len(dataset))
    if stored is not None:
        return stored, True
    features = extractor(dataset.images, track=track, description="real")
    gaussian = gaussian_statistics(features)
    description = {
        "source": dataset.source,
        "fingerprint": dataset.fingerprint,
        "count": len(dataset),
        "extractor": json.loads(extractor.identity),
        "format": _STATS_FORMAT,
    }
    tensors = {"features": features, "mean": gaussian.mean, "covariance": gaussian.covariance}
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_write(tensors_path) as temporary:
            save_file(tensors, temporary, metadata={"key": key, "sha256": _digest(tensors)})
        write_text(description_path, json.dumps(description, indent=2) + "\n")
    except (OSError, SafetensorError) as error:
        reason = getattr(error, "strerror", None) or str(error)
        warnings.warn(
            f"could not cache the images' statistics in {folder} ({reason}); they are "
            "computed again next time",
            stacklevel=2,
        )
    return FeatureStatistics(features, gaussian), False


def _cached_statistics(path: Path, key: str, count: int) -> FeatureStatistics | None:
    """The cache entry `key` of `count` images' statistics, checked; None when missing or
    damaged, or when it is another entry's content copied under this key."""
    try:
        if not path.is_file():
            return None
        check_allocation(path.stat().st_size, f"cached statistics {path}", "delete it")
        with safe_open(str(path), "pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
        features, mean, covariance = tensors["features"], tensors["mean"], tensors["covariance"]
        dims = features.shape[1] if features.ndim == 2 else -1
        if features.shape[0] != count or mean.shape != (dims,) or covariance.shape != (dims, dims):
            return None
        if metadata.get("key") != key or metadata.get("sha256") != _digest(tensors):
            return None
    except (OSError, SafetensorError, KeyError, GentoolError):
        return None
    return FeatureStatistics(features, GaussianStatistics(mean, covariance))


def _digest(tensors: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(tensors):
        digest.update(name.encode())
        digest.update(memoryview(tensors[name].contiguous().numpy()).cast("B"))
    return digest.hexdigest()


def statistics_key(dataset: ImageDataset, extractor: FeatureExtractor) -> str:
    """The cache key of a data set's statistics under an extractor."""
    identity = json.dumps(
        [_STATS_FORMAT, dataset.fingerprint, len(dataset), extractor.identity], sort_keys=True
    )
    return hashlib.sha256(identity.encode()).hexdigest()[:32]


def stats_dir() -> Path:
    """Where real-data statistics are cached: beside the decoded data in gentool's cache."""
    return cache_dir().parent / "stats"


def compare_features(
    real: FeatureStatistics, fake: FeatureStatistics, metrics: Iterable[str], *, seed: int
) -> dict[str, float]:
    """FID, KID and precision/recall of generated features against real ones. FID and KID are
    symmetric; precision is the share of `fake` inside `real`'s manifold, recall the reverse."""
    chosen = set(metrics)
    values: dict[str, float] = {}
    if chosen & {"kid", "pr"} and (real.features is None or fake.features is None):
        raise GentoolError(
            "statistics saved with only a mean and covariance give FID alone: use --metrics fid, "
            "or give the images"
        )
    if "pr" in chosen:
        fewest = min(real.features.shape[0], fake.features.shape[0])
        if fewest <= PR_NEIGHBOURS:
            raise GentoolError(
                f"precision/recall needs more than {PR_NEIGHBOURS} images in each set (the k of "
                f"its k-NN radii); one set has {fewest}"
            )
    if "fid" in chosen:
        values["fid"] = _fid(real, fake)
        if not math.isfinite(values["fid"]):
            raise GentoolError("FID is not finite: the features are too large to be compared")
    if "kid" in chosen:
        generator = torch.Generator().manual_seed(seed)
        values["kid"], spread = kernel_inception_distance(
            real.features, fake.features, generator=generator
        )
        if spread is not None:
            values["kid_std"] = spread
    if "pr" in chosen:
        values["precision"], values["recall"] = precision_recall(real.features, fake.features)
    return values


def _fid(real: FeatureStatistics, fake: FeatureStatistics) -> float:
    """From the features where there are fewer pairs of images than entries of a covariance
    (then the covariances are singular, and the features give FID exactly), else from the
    Gaussians."""
    if real.features is not None and fake.features is not None:
        pairs = real.features.shape[0] * fake.features.shape[0]
        if pairs <= real.features.shape[1] ** 2:
            return feature_frechet_distance(real.features, fake.features)
    return frechet_distance(real.gaussian, fake.gaussian)


def _data_to_reconstruct(
    plugin: ModelPlugin,
    spec: DataSpec,
    source: str,
    image_size: int | None,
    count: int,
    held_out_from: int | None,
) -> tuple[torch.Tensor, torch.Tensor | None, bool]:
    """`recon_images` of data checked to fit the run; labelled for conditional models only."""
    labelled = spec if plugin.capabilities.conditional else None
    data = recon_images(source, labelled, image_size, count, held_out_from)
    check_fits(_spec_of(data[0]), spec, source)
    return data


def recon_images(
    source: str,
    spec: DataSpec | None,
    image_size: int | None,
    count: int,
    held_out_from: int | None,
) -> tuple[torch.Tensor, torch.Tensor | None, bool]:
    """(N, C, H, W) uint8 images to reconstruct, their labels as indexes of the run's classes
    (`spec`, given for a conditional model; None for unlabelled data and the other models), and
    whether the model never trained on them."""
    if source.startswith(BUILTIN_PREFIX) and held_out_from is not None:
        name, size = source.removeprefix(BUILTIN_PREFIX), image_size or DEFAULT_IMAGE_SIZE
        pixels, labels, class_names = builtin_arrays(name, count, size, start=held_out_from)
        images = torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous()
        if spec is None or labels is None:
            return images, None, True
        labels = torch.from_numpy(labels).long()
        return images, labels_by_name(labels, class_names, spec.class_names, source), True
    dataset = load_dataset(source, image_size=image_size, limit=count)
    if spec is None:
        return dataset.images, None, held_out_from is None
    labels = labels_by_name(dataset.labels, dataset.class_names, spec.class_names, source)
    return dataset.images, labels, held_out_from is None


def reconstruction_metrics(
    model: torch.nn.Module,
    plugin: ModelPlugin,
    originals: torch.Tensor,
    labels: torch.Tensor | None = None,
) -> dict[str, float]:
    """MSE, PSNR and SSIM of the model's reconstructions, in [0, 1] pixel units; conditional
    models reconstruct each image with its label."""
    device = next(model.parameters()).device
    low, high = plugin.value_range
    outputs = []
    with evaluating(model):
        for start in range(0, originals.shape[0], _RECONSTRUCT_BATCH):
            batch = originals[start : start + _RECONSTRUCT_BATCH]
            batch = to_value_range(batch, plugin.value_range).to(device)
            batch_labels = None if labels is None else labels[start : start + len(batch)]
            images_back = call_reconstruct(
                model, plugin, batch, supplied_by="a labelled --data",
                labels=None if batch_labels is None else batch_labels.to(device),
            )  # fmt: skip
            outputs.append(images_back.float().cpu())
    reconstructions = ((torch.cat(outputs) - low) / (high - low)).clamp(0, 1)
    targets = originals.to(torch.float32) / 255
    return {
        "mse": mse(targets, reconstructions),
        "psnr": psnr(targets, reconstructions),
        "ssim": ssim(targets, reconstructions),
    }


def model_metrics(
    model: torch.nn.Module,
    plugin: ModelPlugin,
    originals: torch.Tensor,
    labels: torch.Tensor | None,
) -> dict[str, float]:
    """The model's own metrics (`evaluation_metrics`) of held-out images: each value's mean over
    batches, weighted by their sizes."""
    device = next(model.parameters()).device
    totals: dict[str, float] = {}
    with evaluating(model):
        for start in range(0, originals.shape[0], _RECONSTRUCT_BATCH):
            batch = originals[start : start + _RECONSTRUCT_BATCH]
            images = to_value_range(batch, plugin.value_range).to(device)
            batch_labels = None if labels is None else labels[start : start + len(batch)]
            values = call_evaluation_metrics(
                model, plugin, images,
                labels=None if batch_labels is None else batch_labels.to(device),
            )  # fmt: skip
            for name, value in values.items():
                totals[name] = totals.get(name, 0.0) + value * len(batch)
    return {name: total / originals.shape[0] for name, total in totals.items()}


def _spec_of(images: torch.Tensor) -> DataSpec:
    _, channels, height, width = images.shape
    return DataSpec(channels, height, width)
