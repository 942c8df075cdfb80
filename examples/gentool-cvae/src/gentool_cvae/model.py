"""The conditional VAE's networks and objective.

Both networks see the class y as a one-hot vector concatenated to their input:

    encoder  [x flattened, onehot(y)]  (B, C·H·W + K) → hidden → μ, log σ²  (B, latent) each
    decoder  [z, onehot(y)]            (B, latent + K) → hidden → logits    (B, C, H, W)

The loss per image is the negative evidence lower bound of log p(x | y),

    BCE(decoder logits, x) summed over pixels + β · KL(q(z | x, y) ‖ N(0, I)),

with pixels in [0, 1] (the plugin's value range): BCE's targets must lie in [0, 1], which is why
the plugin declares value_range (0, 1) and the decoder ends in a sigmoid when it draws images.
`reparameterize_kl` draws z = μ + σ·ε and the KL in one fused pass.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from gentool.api import Batch, DataSpec, TrainContext
from gentool.kernels import reparameterize_kl
from torch import nn

from gentool_cvae import Config


class ConditionalVAE(nn.Module):
    def __init__(self, config: Config, spec: DataSpec) -> None:
        super().__init__()
        self.config = config
        self.num_classes = spec.num_classes
        self.image_shape = (spec.channels, spec.height, spec.width)
        pixels = math.prod(self.image_shape)
        self.encoder = nn.Sequential(
            nn.Linear(pixels + self.num_classes, config.hidden),
            nn.ReLU(),
            nn.Linear(config.hidden, 2 * config.latent_dim),  # μ and log σ² side by side
        )
        self.decoder = nn.Sequential(
            nn.Linear(config.latent_dim + self.num_classes, config.hidden),
            nn.ReLU(),
            nn.Linear(config.hidden, pixels),
        )

    def _onehot(self, labels: torch.Tensor) -> torch.Tensor:
        return F.one_hot(labels, self.num_classes).float()  # (B, K)

    def _moments(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, ...]:
        hidden = torch.cat([x.flatten(1), self._onehot(labels)], dim=1)  # (B, C·H·W + K)
        return self.encoder(hidden).chunk(2, dim=1)  # μ, log σ²: (B, latent) each

    def _logits(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        hidden = torch.cat([z, self._onehot(labels)], dim=1)  # (B, latent + K)
        return self.decoder(hidden).view(-1, *self.image_shape)  # (B, C, H, W)

    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"cvae": torch.optim.Adam(self.parameters(), lr=self.config.lr)}

    def training_step(self, batch: Batch, ctx: TrainContext) -> dict[str, torch.Tensor]:
        x, labels = batch.images, batch.labels  # (B, C, H, W) in [0, 1]; (B,) class indexes
        mu, logvar = self._moments(x, labels)
        z, kl = reparameterize_kl(mu, logvar, reduction="mean")  # KL: (B,) summed, then mean
        logits = self._logits(z, labels)
        recon = F.binary_cross_entropy_with_logits(logits, x, reduction="sum") / x.shape[0]
        return {"loss": recon + self.config.beta * kl, "recon": recon.detach(), "kl": kl.detach()}

    def sample_latent(
        self,
        n: int,
        *,
        labels: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Codes from the prior N(0, I), the same for every class."""
        device = next(self.parameters()).device
        return torch.randn(n, self.config.latent_dim, generator=generator, device=device)

    @torch.no_grad()
    def decode(self, z: torch.Tensor, *, labels: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self._logits(z, labels))

    @torch.no_grad()
    def sample(
        self,
        n: int,
        *,
        labels: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        return self.decode(self.sample_latent(n, generator=generator), labels=labels)

    @torch.no_grad()
    def encode(self, x: torch.Tensor, *, labels: torch.Tensor) -> torch.Tensor:
        """The mean code μ of each image given its class."""
        return self._moments(x, labels)[0]

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, *, labels: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x, labels=labels), labels=labels)
