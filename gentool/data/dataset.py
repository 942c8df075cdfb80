"""A decoded data set, and how its pixels become a model's values and back."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gentool.api import DataSpec
from gentool.errors import DataError


class DataWarning(UserWarning):
    """Something in the data was skipped or ignored; the CLI prints it as one line."""


@dataclass
class ImageDataset:
    """Decoded images, ready to batch."""

    images: torch.Tensor  # (N, C, H, W) uint8
    labels: torch.Tensor | None  # (N,) int64, or None when unlabelled
    class_names: tuple[str, ...]
    source: str  # what the user named: a path or "builtin:NAME"
    fingerprint: str  # identifies the content and preprocessing; a resumed run checks it

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def spec(self) -> DataSpec:
        _, channels, height, width = self.images.shape
        return DataSpec(channels, height, width, self.class_names)


def to_value_range(images: torch.Tensor, value_range: tuple[float, float]) -> torch.Tensor:
    """uint8 pixels → float32 in [low, high]."""
    low, high = value_range
    return images.to(torch.float32) * ((high - low) / 255.0) + low


def to_uint8(images: torch.Tensor, value_range: tuple[float, float]) -> torch.Tensor:
    """Float images in [low, high] → uint8 pixels (values outside the range are clipped)."""
    low, high = value_range
    scaled = (images.detach().to(torch.float32) - low) * (255.0 / (high - low))
    return scaled.round().clamp(0, 255).to(torch.uint8)


def check_fits(found: DataSpec, trained: DataSpec, source: str) -> None:
    """Refuse data whose images are not the shape a run was trained on."""
    if (found.channels, found.height, found.width) != (
        trained.channels,
        trained.height,
        trained.width,
    ):
        raise DataError(
            f"{source!r} gives {found.channels}-channel {found.height}×{found.width} images, "
            f"and the run was trained on {trained.channels}-channel {trained.height}×"
            f"{trained.width} ones"
        )
