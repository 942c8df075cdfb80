"""An exponential moving average of a model's weights, for sampling (`train --ema DECAY`).

After every training step each floating-point parameter's average follows

    ema ← decay · ema + (1 − decay) · θ,

starting from the weights at the start of training; buffers (BatchNorm's running statistics) are
copied as they are, since they are already averages. The whole model is averaged rather than a
chosen generator, so that it works for every plugin without the trainer knowing its parts; for a
GAN that includes the discriminator, which costs memory but nothing else. Sampling and latent
walks use the average when a run has one (`gentool sample --raw-weights` uses the trained weights).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import torch

from gentool.errors import GentoolError


def check_decay(decay: float) -> float:
    if not 0.0 < decay < 1.0:
        raise GentoolError(f"--ema {decay} must lie between 0 and 1, e.g. 0.999")
    return decay


class ExponentialMovingAverage:
    """The averaged copy of `model`'s state_dict, with the same keys."""

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.decay = check_decay(decay)
        self.parameter_names = {name for name, _ in model.named_parameters()}
        self.state = {name: value.clone() for name, value in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        for name, value in model.state_dict().items():
            average = self.state[name]
            if name in self.parameter_names and value.is_floating_point():
                average.lerp_(value, 1.0 - self.decay)
            else:
                average.copy_(value)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.state

    def load_state_dict(self, tensors: Mapping[str, torch.Tensor]) -> None:
        if tensors.keys() != self.state.keys():
            missing = sorted(self.state.keys() - tensors.keys()) or sorted(
                tensors.keys() - self.state.keys()
            )
            raise GentoolError(f"the moving average does not fit this model (at {missing[0]})")
        for name, value in tensors.items():
            self.state[name].copy_(value)

    @contextmanager
    def applied_to(self, model: torch.nn.Module) -> Iterator[torch.nn.Module]:
        """`model` holding the averaged weights inside the block, its own ones after."""
        trained = {name: value.detach().clone() for name, value in model.state_dict().items()}
        model.load_state_dict(self.state)
        try:
            yield model
        finally:
            model.load_state_dict(trained)
