"""Denoising AE (Vincent, Larochelle, Bengio & Manzagol 2008, "Extracting and composing robust
features with denoising autoencoders", ICML; notes §1.3.3).

Each training image x is corrupted into x̃, and the autoencoder learns to map x̃ back to the clean
x: the loss is recon(g(f(x̃)), x), summed over pixels and averaged over the batch. To undo the
corruption the code has to capture how pixels depend on each other, so it cannot just copy.
Corruption (`noise`):

- masking: each value is zeroed independently with probability p = `corruption` (the paper's
  "masking noise", the notes' binomial erase). Unlike dropout, the kept values are not rescaled:
  at reconstruction time the input is clean, and the net is asked to fill in, not to re-weight.
- gaussian: x̃ = clamp(x + ε, 0, 1), ε ~ N(0, σ²) with σ = `corruption`; the clamp keeps x̃ an
  image of the value range.

Corruption happens only in `training_step`; `reconstruct` denoises whatever it is given.
The network is the `ae` plugin's MLP:

    x̃ (B, C, H, W) → (B, n) → Linear + ReLU per hidden layer → Linear → y (B, code_dim)
    y → Linear + ReLU per mirrored hidden layer → Linear → sigmoid → (B, n) → (B, C, H, W)
"""

from __future__ import annotations

import math

import torch
from torch import nn

from gentool.api import Batch, DataSpec, TrainContext
from gentool.plugins._blocks import mlp, reconstruction_loss
from gentool.plugins.denoising_ae import Config


class DenoisingAE(nn.Module):
    def __init__(self, config: Config, spec: DataSpec) -> None:
        super().__init__()
        if (spec.height, spec.width) != (config.image_size, config.image_size):
            raise ValueError(
                f"denoising-ae was configured for {config.image_size}×{config.image_size} "
                f"images, the data is {spec.height}×{spec.width}"
            )
        self.config = config
        self.image_shape = (spec.channels, spec.height, spec.width)
        pixels = math.prod(self.image_shape)
        self.encoder = mlp((pixels, *config.hidden, config.code_dim), nn.ReLU)
        self.decoder = mlp((config.code_dim, *reversed(config.hidden), pixels), nn.ReLU)

    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"denoising-ae": torch.optim.Adam(self.parameters(), lr=self.config.lr)}

    def corrupt(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """x̃: `x` (in [0, 1]) with masking or Gaussian noise, still in [0, 1]."""
        p = self.config.corruption
        if self.config.noise == "masking":
            keep = torch.rand(x.shape, generator=generator, device=x.device) >= p
            return x * keep
        noise = torch.randn(x.shape, generator=generator, device=x.device) * p
        return (x + noise).clamp(0, 1)

    def training_step(self, batch: Batch, ctx: TrainContext) -> dict[str, torch.Tensor]:
        x = batch.images.flatten(1)  # (B, C, H, W) → (B, n) in [0, 1]
        logits = self.decoder(self.encoder(self.corrupt(x)))  # from x̃ ...
        recon = reconstruction_loss(logits, x, self.config.loss)  # ... back to the clean x
        return {"loss": recon, "recon": recon.detach()}

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x.flatten(1))  # (B, C, H, W) → (B, n) → (B, code_dim)

    @torch.no_grad()
    def decode(self, y: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.decoder(y)).view(-1, *self.image_shape)  # → (B, C, H, W)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """The denoised `x`: no corruption is added here."""
        return self.decode(self.encode(x))
