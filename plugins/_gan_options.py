"""Config fields that more than one GAN plugin offers. Imports no torch: the plugins' `__init__`
modules, which `gentool list` loads, use it."""

from __future__ import annotations

from typing import Any, Literal

from gentool.api import option

Augmentation = Literal["color", "translation", "cutout"]


def check_diffaugment(policies: tuple[str, ...]) -> None:
    """Raise ValueError for a policy named twice: each applies once, whatever the list says."""
    repeated = sorted({policy for policy in policies if policies.count(policy) > 1})
    if repeated:
        raise ValueError(
            f"diffaugment names {', '.join(repeated)} more than once: list each policy once"
        )


def diffaugment_option(default: tuple[str, ...] = ()) -> Any:
    """The `diffaugment` field: which DiffAugment policies D's inputs get."""
    return option(
        default,
        "DiffAugment for small data: augmentations of real and generated images alike on D's "
        "input (see docs/evaluation.md)",
    )


def color_strength_option(default: float) -> Any:
    """The `color_strength` field: how much of the paper's ranges DiffAugment's colour uses."""
    return option(
        default,
        "share of the paper's ranges that DiffAugment's colour policy draws from (brightness "
        "±0.5, saturation and contrast ×(1 ± 1) and ×(1 ± 0.5)); 0 leaves colours as they are",
        min=0,
        max=1,
    )
