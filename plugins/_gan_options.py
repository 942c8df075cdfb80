"""Config fields that more than one GAN plugin offers. Imports no torch: the plugins' `__init__`
modules, which `gentool list` loads, use it."""

from __future__ import annotations

from typing import Any, Literal

from gentool.api import option

Augmentation = Literal["color", "translation", "cutout"]


def diffaugment_option(default: tuple[str, ...] = ()) -> Any:
    """The `diffaugment` field: which DiffAugment policies D's inputs get."""
    return option(
        default,
        "DiffAugment for small data: augmentations of real and generated images alike on D's "
        "input (see docs/evaluation.md)",
    )
