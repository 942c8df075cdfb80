"""Data and a training loop shared by the autoencoder tests."""

from __future__ import annotations

import torch

from gentool.api import Batch
from gentool.synthetic import make_faces
from gentool.training.step import StepContext


def faces(count: int = 16, size: int = 8, *, start: int = 0) -> torch.Tensor:
    """Built-in faces as (count, 3, size, size) float32 in [0, 1]."""
    images = make_faces(count, size, start=start)  # (N, H, W, 3) uint8
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255


def train(model: torch.nn.Module, x: torch.Tensor, steps: int) -> dict[str, torch.Tensor]:
    """`steps` automatic-mode steps on one batch with the model's only optimizer; the last logs."""
    optimizers = model.configure_optimizers()
    ((_, optimizer),) = optimizers.items()
    context = StepContext(optimizers, torch.device("cpu"))
    for _ in range(steps):
        optimizer.zero_grad()
        logs = model.training_step(Batch(x), context)
        logs["loss"].backward()
        optimizer.step()
    return logs
