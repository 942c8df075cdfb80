"""The latent space most built-in generative models sample from: z ~ N(0, I).

Imports torch: load it from a plugin's `model.py`, never from its `__init__.py`.
"""

from __future__ import annotations

import torch


class StandardNormalLatent:
    """`sample_latent` of a module whose generator or decoder reads z ~ N(0, I) of
    `config.latent_dim` (a GAN's noise, a VAE's prior); a conditional model's class enters
    through `decode`'s labels, not through z."""

    def sample_latent(
        self,
        n: int,
        *,
        labels: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        device = next(self.parameters()).device
        return torch.randn(n, self.config.latent_dim, device=device, generator=generator)
