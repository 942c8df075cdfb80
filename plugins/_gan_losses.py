"""The adversarial losses a GAN plugin can choose between, from D's raw logits.

- ``bce``: the original game (Goodfellow et al. 2014) as binary cross-entropy, with G's
  non-saturating loss −log D(G(z)) (their §3):
  D minimises softplus(−D(x)) + softplus(D(G(z))), G minimises softplus(−D(G(z))).
- ``hinge``: the hinge game of geometric GAN (Lim & Ye 2017), which SN-GAN and the projection
  discriminator train with (Miyato et al. 2018): D minimises max(0, 1 − D(x)) + max(0, 1 +
  D(G(z))), G minimises −D(G(z)). D stops pushing an image once its logit clears the margin, so
  its logits stay bounded.

Each term is a batch mean. `frozen` holds D fixed while G's loss flows through it. Imports
torch: load it from a plugin's `model.py`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F

LOSSES = ("bce", "hinge")


@contextmanager
def frozen(discriminator: torch.nn.Module) -> Iterator[None]:
    """D's weights out of autograd inside the block. G's loss needs D's gradient with respect to
    its input only; the gradients of D's weights that the backward pass would also compute
    (7–9 % of a step on the CPU, docs/benchmarks.md) are never used, as D's next step starts
    from zero."""
    parameters = [p for p in discriminator.parameters() if p.requires_grad]
    for parameter in parameters:
        parameter.requires_grad_(False)
    try:
        yield
    finally:
        for parameter in parameters:
            parameter.requires_grad_(True)


def discriminator_loss(
    kind: str, real_logits: torch.Tensor, fake_logits: torch.Tensor
) -> torch.Tensor:
    """D's loss on logits of real images and of G's images (detached from G)."""
    if kind == "hinge":
        return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def generator_loss(kind: str, fooled_logits: torch.Tensor) -> torch.Tensor:
    """G's loss on D's logits of G's images."""
    if kind == "hinge":
        return -fooled_logits.mean()
    return F.softplus(-fooled_logits).mean()
