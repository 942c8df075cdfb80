"""Checks shared by the GAN tests: a context that watches each optimizer step, and the losses."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gentool.training.step import StepContext


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


def assert_bce_losses(model, batch) -> None:
    """loss_d is BCE of D on real (target 1) and fake (target 0); loss_g is the non-saturating
    −log D(G(z)), BCE of D on G's new fakes against 1."""
    context = StepContext(model.configure_optimizers(), torch.device("cpu"))
    logits_seen = []
    model.discriminator.register_forward_hook(
        lambda module, args, output: logits_seen.append(output.detach())
    )
    logs = model.training_step(batch, context)
    real, fake, fooled = logits_seen  # D on x and on G(z) in the D block, on G(z) in the G block
    bce = F.binary_cross_entropy_with_logits
    loss_d = bce(real, torch.ones_like(real)) + bce(fake, torch.zeros_like(fake))
    assert logs["loss_d"] == pytest.approx(loss_d.item(), rel=1e-6)
    expected = bce(fooled, torch.ones_like(fooled))
    assert logs["loss_g"] == pytest.approx(expected.item(), rel=1e-6)
