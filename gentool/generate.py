"""Generating images from a trained run: sample grids, class grids and latent walks."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from safetensors.torch import save_file

from gentool.api import DataSpec, ModelPlugin
from gentool.atomic import atomic_write
from gentool.data import (
    ImageDataset,
    check_fits,
    load_dataset,
    load_image,
    to_uint8,
    to_value_range,
)
from gentool.devices import resolve_device
from gentool.errors import GentoolError, PluginError
from gentool.images import save_grid
from gentool.models import calling, image_size_of, load_trained
from gentool.record import RunRecord
from gentool.registry import PluginEntry
from gentool.run_files import output_path
from gentool.sampling import class_grid, device_of, draw, square_columns

OutputFormat = Literal["png", "npz"]
Interpolation = Literal["lerp", "slerp"]


@dataclass(frozen=True)
class Written:
    path: Path
    count: int
    columns: int


def sample_images(
    entry: PluginEntry,
    *,
    count: int,
    run_dir: Path | None,
    out: Path | None,
    seed: int,
    device: str,
    label: str | None = None,
    grid_by_class: bool | None = None,
    output_format: OutputFormat = "png",
    raw_weights: bool = False,
) -> Written:
    """Draw images from a run's model and write them as a grid PNG or an .npz of raw values.

    Conditional models draw one row per class by default (`grid_by_class`), `count` being the total
    (rounded down to whole rows), or `count` images of one class with `label`.
    """
    plugin = _plugin_of(entry)
    if out is not None:
        out = output_path(out)
    if not plugin.capabilities.sample:
        if plugin.capabilities.reconstruct:
            raise GentoolError(
                f"{plugin.name} is an autoencoder: it reconstructs images and does not sample new "
                f"ones; use `gentool reconstruct {plugin.name}`"
            )
        raise GentoolError(f"{plugin.name} does not generate new images, so it cannot sample")
    model, record, run = load_trained(
        entry, run_dir, resolve_device(device), averaged=not raw_weights
    )
    spec = record.data.spec
    labels, columns = _sample_labels(plugin, spec, count, label, grid_by_class)
    total = count if labels is None else len(labels)
    images = draw(model, plugin, spec, total, seed=seed, labels=labels)
    _check_images(plugin, images, total, spec)
    path = out or run.sample_file(seed, total, output_format)
    if output_format == "npz":
        _save_npz(path, images, labels, plugin.value_range)
    else:
        save_grid(to_uint8(images, plugin.value_range), path, columns=columns)
    return Written(path, images.shape[0], columns)


def interpolate_images(
    entry: PluginEntry,
    *,
    run_dir: Path | None,
    out: Path | None,
    steps: int,
    rows: int,
    method: Interpolation,
    seed: int,
    device: str,
    start_image: Path | None = None,
    end_image: Path | None = None,
    raw_weights: bool = False,
) -> Written:
    """A grid whose rows walk through latent space between two codes, in `steps` images each.

    The codes are random pairs from the model's prior, or the codes of two images (for models
    that encode), in which case there is one row from the first image to the second.
    """
    plugin = _plugin_of(entry)
    if out is not None:
        out = output_path(out)
    if (start_image is None) != (end_image is None):
        raise GentoolError("--from and --to go together: give both images or neither")
    model, record, run = load_trained(
        entry, run_dir, resolve_device(device), averaged=not raw_weights
    )
    if not hasattr(model, "decode"):
        raise GentoolError(f"{plugin.name} cannot decode codes into images, so it cannot walk")
    if start_image is None and not hasattr(model, "sample_latent"):
        raise GentoolError(
            f"{plugin.name} has no prior to draw random codes from: walk between two images "
            "with --from and --to"
        )
    spec = record.data.spec
    labels = None
    if start_image is not None and end_image is not None:
        start, end = _image_codes(model, plugin, spec, (start_image, end_image))
    else:
        generator = torch.Generator(device=device_of(model)).manual_seed(seed)
        if plugin.capabilities.conditional:
            labels = torch.arange(rows, device=device_of(model)) % spec.num_classes
        with calling(plugin, "sample_latent"):
            start = model.sample_latent(rows, labels=labels, generator=generator)
            end = model.sample_latent(rows, labels=labels, generator=generator)
    walk = torch.stack([_interpolate(start, end, t, method) for t in _fractions(steps)], dim=1)
    flat = walk.flatten(0, 1)  # (rows·steps, latent): row by row
    row_labels = None if labels is None else labels.repeat_interleave(steps)
    with torch.no_grad(), calling(plugin, "decode"):
        images = model.decode(flat, labels=row_labels)
    _check_images(plugin, images, flat.shape[0], spec)
    path = out or run.interpolation_file(method, seed)
    save_grid(to_uint8(images, plugin.value_range), path, columns=steps)
    return Written(path, images.shape[0], steps)


def _image_codes(
    model: torch.nn.Module, plugin: ModelPlugin, spec: DataSpec, paths: tuple[Path, Path]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The codes of two image files, each (1, ...), to walk between."""
    if not plugin.capabilities.encode:
        raise GentoolError(
            f"{plugin.name} cannot encode images, so it cannot walk between two of them; "
            "drop --from/--to to walk between random codes"
        )
    pixels = torch.stack([load_image(path, spec) for path in paths])
    images = to_value_range(pixels, plugin.value_range).to(device_of(model))
    with torch.no_grad(), calling(plugin, "encode"):
        codes = model.encode(images)
    return codes[:1], codes[1:]


def reconstruct_images(
    entry: PluginEntry,
    *,
    run_dir: Path | None,
    data: str | None,
    count: int,
    out: Path | None,
    device: str,
) -> tuple[Written, float]:
    """A grid of images (odd rows) above their reconstructions (even rows), and the mean squared
    error of the reconstructions in [0, 1] pixel units."""
    plugin = _plugin_of(entry)
    if out is not None:
        out = output_path(out)
    if not plugin.capabilities.reconstruct:
        raise GentoolError(f"{plugin.name} does not reconstruct images")
    model, record, run = load_trained(entry, run_dir, resolve_device(device))
    dataset = _run_data(plugin, record, data, limit=count)
    originals = to_value_range(dataset.images[:count], plugin.value_range).to(device_of(model))
    with torch.no_grad(), calling(plugin, "reconstruct"):
        reconstructions = model.reconstruct(originals)
    _check_images(plugin, reconstructions, originals.shape[0], record.data.spec)
    before, after = (
        to_uint8(originals, plugin.value_range),
        to_uint8(reconstructions, plugin.value_range),
    )
    error = ((before.float() - after.float()) / 255).square().mean().item()
    columns = min(8, originals.shape[0])
    rows = []
    for start in range(0, originals.shape[0], columns):
        for images in (before[start : start + columns], after[start : start + columns]):
            blank = torch.full((columns - len(images), *images.shape[1:]), 255, dtype=torch.uint8)
            rows.append(torch.cat([images, blank.to(images.device)]))  # a short last row, padded
    path = out or run.reconstruction_file(originals.shape[0])
    save_grid(torch.cat(rows), path, columns=columns)
    return Written(path, originals.shape[0], columns), error


def encode_images(
    entry: PluginEntry,
    *,
    run_dir: Path | None,
    data: str | None,
    out: Path,
    batch_size: int,
    device: str,
) -> tuple[Path, int, tuple[int, ...]]:
    """Codes of every image of `data` (default: the run's data) as safetensors, with labels when
    the data has them; returns the path, the image count and the shape of one code."""
    plugin = _plugin_of(entry)
    if out is not None:
        out = output_path(out)
    if not plugin.capabilities.encode:
        raise GentoolError(f"{plugin.name} does not encode images into codes")
    model, record, run = load_trained(entry, run_dir, resolve_device(device))
    dataset = _run_data(plugin, record, data, limit=None)
    codes = []
    with torch.no_grad():
        for start in range(0, len(dataset), batch_size):
            images = dataset.images[start : start + batch_size]
            batch = to_value_range(images, plugin.value_range).to(device_of(model))
            with calling(plugin, "encode"):
                codes.append(model.encode(batch).float().cpu())
    tensors = {"codes": torch.cat(codes).contiguous()}
    if dataset.labels is not None:
        tensors["labels"] = dataset.labels.contiguous()
    metadata = {
        "model": plugin.name,
        "run": str(run),
        "source": dataset.source,
        "class_names": json.dumps(dataset.class_names),
    }
    with atomic_write(out, make_parents=True) as temporary:
        save_file(tensors, temporary, metadata=metadata)
    return out, len(dataset), tuple(tensors["codes"].shape[1:])


def _run_data(
    plugin: ModelPlugin, record: RunRecord, data: str | None, *, limit: int | None
) -> ImageDataset:
    """`data`, or the run's own data, fitted to the run's model."""
    config = plugin.parse_config(record.config)
    source = data or record.data.source
    if limit is None and data is None:
        limit = record.data.limit
    dataset = load_dataset(source, image_size=image_size_of(config), limit=limit)
    check_fits(dataset.spec, record.data.spec, source)
    return dataset


def slerp(start: torch.Tensor, end: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation of each row pair (White 2016): keeps norms typical of a Gaussian."""
    start_flat, end_flat = start.flatten(1), end.flatten(1)
    cosine = torch.nn.functional.cosine_similarity(start_flat, end_flat, dim=1).clamp(-1, 1)
    omega = torch.arccos(cosine)[:, None]  # (rows, 1)
    sin_omega = torch.sin(omega)
    nearly_parallel = sin_omega.abs() < 1e-6
    safe = torch.where(nearly_parallel, torch.ones_like(sin_omega), sin_omega)
    spherical = (torch.sin((1 - t) * omega) * start_flat + torch.sin(t * omega) * end_flat) / safe
    linear = torch.lerp(start_flat, end_flat, t)
    return torch.where(nearly_parallel, linear, spherical).view_as(start)


def _interpolate(start: torch.Tensor, end: torch.Tensor, t: float, method: Interpolation):
    if t == 0.0:
        return start  # exact endpoints: an image walk starts at the image's own code
    if t == 1.0:
        return end
    return slerp(start, end, t) if method == "slerp" else torch.lerp(start, end, t)


def _fractions(steps: int) -> list[float]:
    return [index / (steps - 1) for index in range(steps)]


def _sample_labels(
    plugin: ModelPlugin,
    spec: DataSpec,
    count: int,
    label: str | None,
    grid_by_class: bool | None,
) -> tuple[torch.Tensor | None, int]:
    """The labels to sample with (None for unconditional models) and the grid's columns."""
    square = square_columns(count)
    if not plugin.capabilities.conditional:
        if label is not None or grid_by_class:
            raise GentoolError(
                f"{plugin.name} is not conditional: --label and --grid-by-class need a model "
                "trained with class labels"
            )
        return None, square
    if label is not None:
        return torch.full((count,), _class_index(label, spec), dtype=torch.int64), square
    if grid_by_class is False:
        return torch.arange(count) % spec.num_classes, square
    return class_grid(spec.num_classes, count)


def _class_index(label: str, spec: DataSpec) -> int:
    if label in spec.class_names:
        return spec.class_names.index(label)
    if label.isdigit() and int(label) < spec.num_classes:
        return int(label)
    names = ", ".join(f"{index}={name}" for index, name in enumerate(spec.class_names))
    raise GentoolError(f"unknown --label {label!r}; the classes are {names}")


def _check_images(plugin: ModelPlugin, images: torch.Tensor, count: int, spec: DataSpec) -> None:
    expected = (count, spec.channels, spec.height, spec.width)
    if tuple(images.shape) != expected:
        raise PluginError(
            f"{plugin.name} returned images of shape {tuple(images.shape)}, expected {expected}"
        )


def _save_npz(
    path: Path, images: torch.Tensor, labels: torch.Tensor | None, value_range: tuple[float, float]
) -> None:
    arrays = {
        "images": images.detach().float().cpu().numpy(),  # (N, C, H, W) in the model's range
        "value_range": np.array(value_range, dtype=np.float32),
    }
    if labels is not None:
        arrays["labels"] = labels.cpu().numpy()
    with atomic_write(path, make_parents=True) as temporary, temporary.open("wb") as file:
        np.savez(file, **arrays)


def _plugin_of(entry: PluginEntry) -> ModelPlugin:
    assert entry.plugin is not None  # the registry resolves loaded plugins only
    return entry.plugin
