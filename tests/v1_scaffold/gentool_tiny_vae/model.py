"""The tiny-vae model: an MLP variational autoencoder (Kingma & Welling 2013).

gentool's trainer calls `configure_optimizers` once and `training_step` per batch; in this
automatic mode the step returns {"loss": ...} and the trainer back-propagates and steps.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from gentool.api import Batch, DataSpec, TrainContext
from gentool.kernels import reparameterize_kl
from gentool_tiny_vae import Config


class Model(nn.Module):
    def __init__(self, config: Config, spec: DataSpec) -> None:
        super().__init__()
        self.config = config
        self.image_shape = (spec.channels, spec.height, spec.width)
        pixels = math.prod(self.image_shape)
        self.encoder = nn.Sequential(
            nn.Flatten(),  # (B, C·H·W)
            nn.Linear(pixels, config.hidden),
            nn.ReLU(),
            nn.Linear(config.hidden, 2 * config.latent_dim),  # μ and log σ²
        )
        self.decoder = nn.Sequential(
            nn.Linear(config.latent_dim, config.hidden),
            nn.ReLU(),
            nn.Linear(config.hidden, pixels),  # pixel logits
        )

    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"model": torch.optim.Adam(self.parameters(), lr=self.config.lr)}

    def training_step(self, batch: Batch, ctx: TrainContext) -> dict[str, torch.Tensor]:
        mu, logvar = self.encoder(batch.images).chunk(2, dim=1)
        z, kl = reparameterize_kl(mu, logvar, reduction="mean")
        logits = self.decoder(z).view(-1, *self.image_shape)
        recon = F.binary_cross_entropy_with_logits(logits, batch.images, reduction="sum")
        recon = recon / batch.images.shape[0]
        return {"loss": recon + kl, "recon": recon.detach(), "kl": kl.detach()}

    def sample_latent(
        self,
        n: int,
        *,
        labels: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        device = next(self.parameters()).device
        return torch.randn(n, self.config.latent_dim, generator=generator, device=device)

    @torch.no_grad()
    def decode(self, z: torch.Tensor, *, labels: torch.Tensor | None = None) -> torch.Tensor:
        return torch.sigmoid(self.decoder(z)).view(-1, *self.image_shape)

    @torch.no_grad()
    def sample(
        self,
        n: int,
        *,
        labels: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        return self.decode(self.sample_latent(n, generator=generator))

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x).chunk(2, dim=1)[0]

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))
