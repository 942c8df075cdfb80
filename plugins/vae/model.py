"""VAE (Kingma & Welling 2013, arXiv:1312.6114; β from Higgins et al. 2017).

The encoder maps an image to the mean μ and the log-variance log σ² of q(z|x): the log-variance,
because it ranges over all reals (σ² must stay positive, and a ReLU would zero half of it). The
code is sampled by reparameterisation, z = μ + exp(½·log σ²)·ε with ε ~ N(0, I), so the sampling
leaves the gradient path; this and the KL term are one fused op, `reparameterize_kl`. The decoder
mirrors the encoder with transposed convolutions. The loss per image is

    reconstruction (summed over pixels) + β · KL(N(μ, σ²) ‖ N(0, I)),

with pixels in [0, 1]: binary cross-entropy on the decoder's logits, or squared error.
At 64×64: x (C, 64, 64) → 32 → 16 → 8 → 4×4×256 → μ, log σ² (latent) → 4×4×256 → … → (C, 64, 64).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from gentool.api import Batch, DataSpec, TrainContext
from gentool.kernels import ConvTransposeBNReLU, reparameterize_kl
from gentool.plugins._blocks import reconstruction_loss
from gentool.plugins._latent import StandardNormalLatent
from gentool.plugins.vae import Config


class Encoder(nn.Module):
    def __init__(self, channels: int, image_size: int, features: int, latent_dim: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width, size = channels, image_size
        while size > 4:  # each block halves H and W
            out = features if width == channels else width * 2
            layers += [
                nn.Conv2d(width, out, 4, 2, 1, bias=False),
                nn.BatchNorm2d(out),
                nn.LeakyReLU(0.2),
            ]
            width, size = out, size // 2
        self.features = nn.Sequential(*layers)
        self.to_moments = nn.Linear(width * 4 * 4, 2 * latent_dim)  # μ and log σ² side by side
        self.top_width = width

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.features(images).flatten(1)  # (B, width·4·4)
        mu, logvar = self.to_moments(hidden).chunk(2, dim=1)  # (B, latent) each
        return mu, logvar


class Decoder(nn.Module):
    def __init__(self, channels: int, image_size: int, top_width: int, latent_dim: int) -> None:
        super().__init__()
        self.top_width = top_width
        self.from_code = nn.Linear(latent_dim, top_width * 4 * 4)
        blocks: list[nn.Module] = [nn.BatchNorm2d(top_width), nn.ReLU()]
        width = top_width
        for _ in range(int(math.log2(image_size)) - 3):  # 4×4 up to image_size / 2
            blocks.append(ConvTransposeBNReLU(width, width // 2, 4, 2, 1))
            width //= 2
        blocks.append(nn.ConvTranspose2d(width, channels, 4, 2, 1))  # logits of the pixels
        self.blocks = nn.Sequential(*blocks)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        hidden = self.from_code(z).view(-1, self.top_width, 4, 4)  # (B, width, 4, 4)
        return self.blocks(hidden)  # (B, C, H, W) logits


class VAE(StandardNormalLatent, nn.Module):
    def __init__(self, config: Config, spec: DataSpec) -> None:
        super().__init__()
        if (spec.height, spec.width) != (config.image_size, config.image_size):
            raise ValueError(
                f"vae was configured for {config.image_size}×{config.image_size} images, "
                f"the data is {spec.height}×{spec.width}"
            )
        self.config = config
        self.encoder = Encoder(spec.channels, config.image_size, config.features, config.latent_dim)
        self.decoder = Decoder(
            spec.channels, config.image_size, self.encoder.top_width, config.latent_dim
        )

    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"vae": torch.optim.Adam(self.parameters(), lr=self.config.lr)}

    def training_step(self, batch: Batch, ctx: TrainContext) -> dict[str, torch.Tensor]:
        x = batch.images  # (B, C, H, W) in [0, 1]
        mu, logvar = self.encoder(x)
        z, kl = reparameterize_kl(mu, logvar, reduction="mean")
        recon = reconstruction_loss(self.decoder(z), x, self.config.recon_loss)
        return {"loss": recon + self.config.beta * kl, "recon": recon.detach(), "kl": kl.detach()}

    @torch.no_grad()
    def decode(self, z: torch.Tensor, *, labels: torch.Tensor | None = None) -> torch.Tensor:
        return torch.sigmoid(self.decoder(z))

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
        """The mean code μ of each image: the deterministic embedding."""
        return self.encoder(x)[0]

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))
