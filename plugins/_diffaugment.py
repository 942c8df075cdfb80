"""Differentiable augmentation for GANs on small data (Zhao et al. 2020, arXiv:2006.10738).

A discriminator trained on a few thousand images memorises them, and its feedback to the
generator stops being useful. DiffAugment shows D only augmented images, real and fake alike, and
because every transformation is differentiable, the generator's gradient flows back through the
augmentation of its own images. Augmenting the real images alone would teach G to draw the
augmentations; augmenting both leaves the target distribution unchanged.

The three policies are the paper's: colour (brightness, saturation, contrast), translation by up
to 1/8 of the image with zero fill, and cutout of a square half the image's side. The colour
policy's ranges can be narrowed (`color_strength`): at the paper's full ranges a conditional
generator learned the shapes of its classes more slowly (docs/evaluation.md). Every draw comes
from torch's generator on the images' device (or the one given), which a run's checkpoint
captures, so a resumed run augments exactly as an uninterrupted one.

Imports torch: load it from a plugin's `model.py`, never from its `__init__.py`.
"""

from __future__ import annotations

import torch

TRANSLATION_RATIO = 1 / 8
CUTOUT_RATIO = 1 / 2


def diff_augment(
    images: torch.Tensor,
    policy: tuple[str, ...],
    generator: torch.Generator | None = None,
    *,
    color_strength: float = 1.0,
) -> torch.Tensor:
    """(B, C, H, W) images with the `policy`'s augmentations, in the paper's order, each drawn
    independently per image; the images themselves when the policy is empty."""
    if "color" in policy:
        images = color(images, generator, color_strength)
    if "translation" in policy:
        images = translation(images, generator)
    if "cutout" in policy:
        images = cutout(images, generator)
    return images


def _uniform(images: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One U(0, 1) value per image, shaped (B, 1, 1, 1) to broadcast over it."""
    shape = (images.shape[0], 1, 1, 1)
    return torch.rand(shape, generator=generator, device=images.device, dtype=images.dtype)


def color(
    images: torch.Tensor, generator: torch.Generator | None = None, strength: float = 1.0
) -> torch.Tensor:
    """Brightness shifted by U(−0.5, 0.5), saturation scaled by U(0, 2), contrast by U(0.5, 1.5):
    the paper's ranges, each narrowed about its identity (0 or 1) by `strength` in [0, 1]."""
    # Each factor is written so that at strength 1 it is the paper's expression to the last bit,
    # and runs from before `strength` resume exactly.
    images = images + (_uniform(images, generator) - 0.5) * strength
    grey = images.mean(dim=1, keepdim=True)
    saturation = _uniform(images, generator) * (2 * strength) + (1 - strength)
    images = (images - grey) * saturation + grey
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    contrast = _uniform(images, generator) * strength + (1 - strength / 2)
    return (images - mean) * contrast + mean


def translation(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Each image moved by whole pixels, up to 1/8 of its side each way; what moves in is 0."""
    batch, channels, height, width = images.shape
    rows = _shifted_positions(batch, height, images.device, generator)  # (B, H) source rows
    cols = _shifted_positions(batch, width, images.device, generator)  # (B, W) source columns
    inside = ((rows >= 0) & (rows < height))[:, None, :, None] & ((cols >= 0) & (cols < width))[
        :, None, None, :
    ]
    rows = rows.clamp(0, height - 1)[:, None, :, None].expand(batch, channels, height, width)
    cols = cols.clamp(0, width - 1)[:, None, None, :].expand(batch, channels, height, width)
    moved = images.gather(2, rows).gather(3, cols)
    return moved * inside.to(images.dtype)


def _shifted_positions(
    batch: int, size: int, device: torch.device, generator: torch.Generator | None
) -> torch.Tensor:
    limit = int(size * TRANSLATION_RATIO + 0.5)
    shift = torch.randint(-limit, limit + 1, (batch, 1), generator=generator, device=device)
    return torch.arange(size, device=device) + shift


def cutout(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """A square of half the image's side, centred anywhere in it (so it may be clipped by the
    border), set to 0 in each image."""
    batch, _, height, width = images.shape
    mask_rows = _cut_span(batch, height, images.device, generator)  # (B, H) inside the square
    mask_cols = _cut_span(batch, width, images.device, generator)
    cut = mask_rows[:, None, :, None] & mask_cols[:, None, None, :]
    return images * (~cut).to(images.dtype)


def _cut_span(
    batch: int, size: int, device: torch.device, generator: torch.Generator | None
) -> torch.Tensor:
    length = int(size * CUTOUT_RATIO + 0.5)
    centre = torch.randint(0, size, (batch, 1), generator=generator, device=device)
    start = centre - length // 2
    positions = torch.arange(size, device=device)
    return (positions >= start) & (positions < start + length)
