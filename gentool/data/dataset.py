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


def labels_by_name(
    labels: torch.Tensor | None,
    class_names: tuple[str, ...],
    run_classes: tuple[str, ...],
    source: str,
) -> torch.Tensor | None:
    """Labels of data whose classes are `class_names` as indexes of a run's classes, matched by
    name: other data may hold fewer classes than the run was trained on, in another order."""
    if labels is None or tuple(class_names) == tuple(run_classes):
        return labels
    check_known_classes(class_names, run_classes, source)
    index_of = {name: index for index, name in enumerate(run_classes)}
    return torch.tensor([index_of[name] for name in class_names], dtype=torch.int64)[labels]


def check_known_classes(
    class_names: tuple[str, ...], run_classes: tuple[str, ...], source: str
) -> None:
    """Refuse data holding a class that a run was not trained on."""
    unknown = [name for name in class_names if name not in run_classes]
    if unknown:
        raise DataError(
            f"{source!r} holds the class {unknown[0]!r}, which the run was not trained on; its "
            f"classes are {', '.join(run_classes)}: give data of those classes"
        )


def check_fits(
    found: DataSpec, trained: DataSpec, source: str, *, conditional: bool = False
) -> None:
    """Refuse data whose images are not the shape a run was trained on, and for a conditional
    model, which draws only the run's classes, data of other classes."""
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
    if conditional:
        check_known_classes(found.class_names, trained.class_names, source)
