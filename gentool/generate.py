"""Files from a trained run: sample grids, class grids, latent walks, reconstructions and codes.

The computing is `gentool.trained`'s (the Python API); this module checks the command line's
options, calls it, and writes what it returns.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from safetensors.torch import save_file

from gentool.atomic import atomic_write
from gentool.data import ImageDataset, check_fits, labels_by_name, load_dataset, to_uint8
from gentool.devices import resolve_device
from gentool.errors import GentoolError
from gentool.images import save_grid
from gentool.models import image_size_of
from gentool.registry import PluginEntry
from gentool.run_files import output_path
from gentool.sampling import class_grid, square_columns
from gentool.trained import Interpolation, TrainedModel

OutputFormat = Literal["png", "npz"]


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
    if out is not None:
        out = output_path(out)
    model = _load(entry, run_dir, device, raw_weights)
    plugin = model.plugin  # with the capabilities of the run's config
    if not plugin.capabilities.sample:
        if plugin.capabilities.reconstruct:
            raise GentoolError(
                f"{plugin.name} is an autoencoder: it reconstructs images and does not sample new "
                f"ones; use `gentool reconstruct {plugin.name}`"
            )
        raise GentoolError(f"{plugin.name} does not generate new images, so it cannot sample")
    labels, columns = _sample_labels(model, count, label, grid_by_class)
    total = count if labels is None else len(labels)
    images = model.sample(total, seed=seed, labels=labels, output="float")
    chosen = None if label is None else model.class_index(label, called="--label")
    path = out or model.run.sample_file(seed, total, output_format, chosen)
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
    label: str | None = None,
    raw_weights: bool = False,
) -> Written:
    """A grid whose rows walk through latent space between two codes, in `steps` images each.

    The codes are random pairs from the model's prior, or the codes of two images (for models
    that encode), in which case there is one row from the first image to the second.
    Conditional models walk within `label`'s class; without it, random pairs take the classes
    in turn, and two images the classes of the folders they are in.
    """
    if out is not None:
        out = output_path(out)
    if (start_image is None) != (end_image is None):
        raise GentoolError("--from and --to go together: give both images or neither")
    model = _load(entry, run_dir, device, raw_weights)
    plugin = model.plugin
    if not hasattr(model.module, "decode"):
        raise GentoolError(f"{plugin.name} cannot decode codes into images, so it cannot walk")
    if start_image is None and not hasattr(model.module, "sample_latent"):
        raise GentoolError(
            f"{plugin.name} has no prior to draw random codes from: walk between two images "
            "with --from and --to"
        )
    if start_image is not None and not plugin.capabilities.encode:
        raise GentoolError(
            f"{plugin.name} cannot encode images, so it cannot walk between two of them; "
            "drop --from/--to to walk between random codes"
        )
    _check_label(model, label)
    if start_image is not None and label is None and model.capabilities.conditional:
        for image in (start_image, end_image):
            if model.folder_class(image) is None:
                raise GentoolError(
                    f"{plugin.name} is conditional and {image} is in no folder named after one "
                    f"of its classes: say which class to walk in with --label"
                )
    walk = model.interpolate(
        steps, rows=rows if start_image is None else 1, seed=seed, method=method,
        start=start_image, end=end_image, label=label,
    )  # fmt: skip
    chosen = None if label is None else model.class_index(label, called="--label")
    path = out or model.run.interpolation_file(method, seed, chosen)
    save_grid(walk.flatten(0, 1), path, columns=steps)
    return Written(path, walk.shape[0] * steps, steps)


def reconstruct_images(
    entry: PluginEntry,
    *,
    run_dir: Path | None,
    data: str | None,
    count: int,
    out: Path | None,
    device: str,
    raw_weights: bool = False,
) -> tuple[Written, float]:
    """A grid of images (odd rows) above their reconstructions (even rows), and the mean squared
    error of the reconstructions in [0, 1] pixel units."""
    if out is not None:
        out = output_path(out)
    model = _load(entry, run_dir, device, raw_weights)
    if not model.capabilities.reconstruct:
        raise GentoolError(f"{model.name} does not reconstruct images")
    dataset = _run_data(model, data, limit=count)
    before = dataset.images[:count]
    labels = _data_labels(model, dataset, "reconstruct")
    after = model.reconstruct(before, labels=None if labels is None else labels[:count]).cpu()
    error = ((before.float() - after.float()) / 255).square().mean().item()
    columns = min(8, before.shape[0])
    rows = []
    for start in range(0, before.shape[0], columns):
        for images in (before[start : start + columns], after[start : start + columns]):
            blank = torch.full((columns - len(images), *images.shape[1:]), 255, dtype=torch.uint8)
            rows.append(torch.cat([images, blank]))  # a short last row, padded
    path = out or model.run.reconstruction_file(before.shape[0])
    save_grid(torch.cat(rows), path, columns=columns)
    return Written(path, before.shape[0], columns), error


def encode_images(
    entry: PluginEntry,
    *,
    run_dir: Path | None,
    data: str | None,
    out: Path,
    batch_size: int,
    device: str,
    raw_weights: bool = False,
) -> tuple[Path, int, tuple[int, ...]]:
    """Codes of every image of `data` (default: the run's data) as safetensors, with labels when
    the data has them; returns the path, the image count and the shape of one code."""
    if out is not None:
        out = output_path(out)
    model = _load(entry, run_dir, device, raw_weights)
    plugin = model.plugin
    if not plugin.capabilities.encode:
        raise GentoolError(f"{plugin.name} does not encode images into codes")
    dataset = _run_data(model, data, limit=None)
    labels = _data_labels(model, dataset, "encode")
    codes = model.encode(dataset.images, labels=labels, batch_size=batch_size)
    tensors = {"codes": codes.cpu().contiguous()}  # in the model's dtype: int64 codes stay so
    if dataset.labels is not None:
        tensors["labels"] = dataset.labels.contiguous()
    metadata = {
        "model": plugin.name,
        "run": str(model.run),
        "source": dataset.source,
        "class_names": json.dumps(dataset.class_names),
    }
    with atomic_write(out, make_parents=True) as temporary:
        save_file(tensors, temporary, metadata=metadata)
    return out, len(dataset), tuple(tensors["codes"].shape[1:])


def _data_labels(model: TrainedModel, dataset: ImageDataset, command: str) -> torch.Tensor | None:
    """The data's labels for a conditional model, which encodes each image with its class;
    None for the others."""
    if not model.capabilities.conditional:
        return None
    if dataset.labels is None:
        raise GentoolError(
            f"{model.name} is conditional: it needs the class of each image to {command} it, "
            f"and {dataset.source} has no labels; give --data a labelled dataset (a folder with "
            "a sub-folder per class, or an .npz with labels)"
        )
    return labels_by_name(
        dataset.labels, dataset.class_names, model.spec.class_names, dataset.source
    )


def _check_label(model: TrainedModel, label: str | None) -> None:
    if label is None:
        return
    if not model.capabilities.conditional:
        raise GentoolError(
            f"{model.name} is not conditional: --label needs a model trained with class labels"
        )
    model.class_index(label, called="--label")


def _load(entry: PluginEntry, run_dir: Path | None, device: str, raw_weights: bool) -> TrainedModel:
    return TrainedModel.from_run(entry, run_dir, resolve_device(device), averaged=not raw_weights)


def _run_data(model: TrainedModel, data: str | None, *, limit: int | None) -> ImageDataset:
    """`data`, or the run's own data, fitted to the run's model."""
    config = model.run.read_config(model.plugin, model.record)
    source = data or model.record.data.source
    if limit is None and data is None:
        limit = model.record.data.limit
    dataset = load_dataset(source, image_size=image_size_of(config), limit=limit)
    check_fits(dataset.spec, model.spec, source)
    return dataset


def _sample_labels(
    model: TrainedModel, count: int, label: str | None, grid_by_class: bool | None
) -> tuple[torch.Tensor | None, int]:
    """The labels to sample with (None for unconditional models) and the grid's columns."""
    square = square_columns(count)
    if not model.capabilities.conditional:
        if label is not None or grid_by_class:
            raise GentoolError(
                f"{model.name} is not conditional: --label and --grid-by-class need a model "
                "trained with class labels"
            )
        return None, square
    if label is not None:
        if grid_by_class:
            raise GentoolError(
                "--label draws one class and --grid-by-class one row of each: give one of them"
            )
        index = model.class_index(label, called="--label")
        return torch.full((count,), index, dtype=torch.int64), square
    if grid_by_class is False:
        return model.class_labels(count), square
    classes = model.spec.num_classes
    if grid_by_class and count < classes:
        raise GentoolError(
            f"--grid-by-class draws a row for each of the {classes} classes, and --n {count} "
            f"cannot fill them: give --n {classes} or more"
        )
    return class_grid(classes, count)


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
