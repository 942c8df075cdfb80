"""Building blocks shared by more than one shipped model. Imports torch: load it from a plugin's
`model.py`, never from its `__init__.py`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import nn


def mlp(sizes: Sequence[int], activation: Callable[[], nn.Module]) -> nn.Sequential:
    """Linear layers through `sizes`, with a fresh `activation()` after every one but the last.

    `mlp((784, 256, 1), nn.ReLU)` is Linear(784, 256), ReLU, Linear(256, 1): the output is left
    raw, so the caller adds what it needs (tanh for an image, nothing for a logit).
    """
    if len(sizes) < 2:
        raise ValueError(f"an MLP needs an input and an output size, got sizes {tuple(sizes)}")
    layers: list[nn.Module] = []
    for index, (size_in, size_out) in enumerate(pairwise(sizes)):
        if index > 0:
            layers.append(activation())
        layers.append(nn.Linear(size_in, size_out))
    return nn.Sequential(*layers)


def reconstruction_loss(logits: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-image reconstruction error of pixels in [0, 1], summed over pixels, batch-averaged.

    `logits` are the decoder's raw outputs; "bce" scores them as Bernoulli logits (the negative
    log-likelihood), "mse" squares the error of their sigmoid.
    """
    if kind == "bce":
        per_pixel = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    else:
        per_pixel = F.mse_loss(torch.sigmoid(logits), target, reduction="none")
    return per_pixel.flatten(1).sum(dim=1).mean()
