"""Drawing images from a model: the one seeded sampler behind epoch grids, `gentool sample`,
evaluation and the conformance kit.

The same seed gives the same images: noise comes from one generator seeded once, drawn batch
after batch in the model's eval mode without gradients. Conditional models are given labels,
one class after another unless the caller chooses them.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from gentool.api import DataSpec, ModelPlugin
from gentool.data import to_uint8
from gentool.limits import check_allocation
from gentool.model_calls import call_sample, check_images

SAMPLE_BATCH = 250  # images per call of the model's `sample`: bounds the memory of large draws


@contextmanager
def evaluating(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """`model` in eval mode without gradients inside the block, as it was after."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(was_training)


def draw(
    model: torch.nn.Module,
    plugin: ModelPlugin,
    spec: DataSpec,
    count: int,
    *,
    seed: int,
    labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """`count` samples (count, C, H, W) in the plugin's value range, on the model's device.

    Conditional models draw `labels`, by default class i mod the number of classes for image i.
    """
    batches = list(_draw_batches(model, plugin, spec, count, seed=seed, labels=labels))
    return torch.cat(batches) if len(batches) > 1 else batches[0]


def draw_uint8(
    model: torch.nn.Module,
    plugin: ModelPlugin,
    spec: DataSpec,
    count: int,
    *,
    seed: int,
    labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """`draw`, as (count, C, H, W) uint8 pixels on the CPU: each batch is turned into pixels as
    it is drawn, so that a large draw (an evaluation's) holds one byte per value, not eight."""
    check_allocation(
        count * spec.channels * spec.height * spec.width,
        f"{count} images of {spec.height}×{spec.width}",
        "draw fewer (lower --n)",
    )
    pixels = torch.empty((count, spec.channels, spec.height, spec.width), dtype=torch.uint8)
    start = 0
    for images in _draw_batches(model, plugin, spec, count, seed=seed, labels=labels):
        pixels[start : start + len(images)] = to_uint8(images, plugin.value_range).cpu()
        start += len(images)
    return pixels


def _draw_batches(
    model: torch.nn.Module,
    plugin: ModelPlugin,
    spec: DataSpec,
    count: int,
    *,
    seed: int,
    labels: torch.Tensor | None,
) -> Iterator[torch.Tensor]:
    device = device_of(model)
    if plugin.capabilities.conditional and labels is None:
        labels = torch.arange(count) % max(spec.num_classes, 1)
    if labels is not None:
        labels = labels.to(device)
    generator = torch.Generator(device=device).manual_seed(seed)
    with evaluating(model):
        for start in range(0, count, SAMPLE_BATCH):
            size = min(SAMPLE_BATCH, count - start)
            batch_labels = None if labels is None else labels[start : start + size]
            images = call_sample(model, plugin, size, labels=batch_labels, generator=generator)
            check_images(plugin, images, (size, spec.channels, spec.height, spec.width))
            yield images


def class_grid(num_classes: int, count: int) -> tuple[torch.Tensor, int]:
    """Labels for a grid with one row per class, and its columns: `count` images in all,
    rounded down to whole rows; with fewer images than classes, one of each of the first
    `count` classes, in a square grid (never more images than asked for)."""
    if count < num_classes:
        return torch.arange(count), square_columns(count)
    per_class = count // num_classes
    return torch.arange(num_classes).repeat_interleave(per_class), per_class


def square_columns(count: int) -> int:
    """Columns of the squarest grid of `count` images."""
    return math.ceil(math.sqrt(count))


def device_of(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device
