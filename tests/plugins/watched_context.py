"""A training context that watches what each optimizer step changes, for the GAN tests."""

from __future__ import annotations

import torch
from torch import nn

from gentool.train import StepContext


class WatchedContext(StepContext):
    """The trainer's context, recording what each optimizer step changed.

    At every `step(name)` it checks that no parameter moved since the previous step (so nothing
    but an optimizer step moves weights) and that the stepped network's gradients were clean
    before the backward that preceded it; then it records which parameters the step changed.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model.configure_optimizers(), torch.device("cpu"))
        self.model = model
        self.steps: list[tuple[str, set[str]]] = []  # (optimizer, parameters it changed)
        self.moved_between_steps: set[str] = set()
        self.stale_gradients: set[str] = set()
        self._grads_before_backward: set[str] = set()
        self._last = self.snapshot()

    def snapshot(self) -> dict[str, torch.Tensor]:
        return {name: value.detach().clone() for name, value in self.model.named_parameters()}

    def changed_since(self, before: dict[str, torch.Tensor]) -> set[str]:
        return {
            name
            for name, value in self.model.named_parameters()
            if not torch.equal(value, before[name])
        }

    def backward(self, loss: torch.Tensor) -> None:
        self._grads_before_backward = {
            name
            for name, value in self.model.named_parameters()
            if value.grad is not None and torch.any(value.grad != 0)
        }
        super().backward(loss)

    def step(self, name: str) -> None:
        self.moved_between_steps |= self.changed_since(self._last)
        network = "discriminator." if name == "d" else "generator."
        self.stale_gradients |= {
            param for param in self._grads_before_backward if param.startswith(network)
        }
        before = self.snapshot()
        super().step(name)
        self.steps.append((name, self.changed_since(before)))
        self._last = self.snapshot()
