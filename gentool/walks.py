"""Walks through latent space: the points between two codes, and the labels along a walk."""

from __future__ import annotations

from typing import Literal

import torch

Interpolation = Literal["lerp", "slerp"]


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


def walk_point(start: torch.Tensor, end: torch.Tensor, t: float, method: Interpolation):
    if t == 0.0:
        return start  # exact endpoints: an image walk starts at the image's own code
    if t == 1.0:
        return end
    return slerp(start, end, t) if method == "slerp" else torch.lerp(start, end, t)


def halves(
    first: torch.Tensor | None, last: torch.Tensor | None, steps: int
) -> torch.Tensor | None:
    """One label per step of a walk between two images: the first image's class for the first
    half, the last's for the rest (None for models that take no labels)."""
    if first is None or last is None:
        return None
    return torch.cat([first.repeat(steps - steps // 2), last.repeat(steps // 2)])


def walk_fractions(steps: int) -> list[float]:
    return [index / (steps - 1) for index in range(steps)]
