"""Sparse AE (Andrew Ng, CS294A lecture notes "Sparse autoencoder", 2011; notes §1.3.2).

One layer of sigmoid hidden units h = σ(Wx + b), decoded by x' = σ(W'h + b'). The hidden layer may
be wider than the image: what stops it from copying is a penalty that keeps each unit near 0
(inactive) for most inputs. With rho_hat_j the mean activation of unit j over the batch and rho
the target (`rho`, Ng's 0.05), the loss is

    reconstruction (summed over pixels, averaged over the batch) + β · Σ_j KL(rho ‖ rho_hat_j),
    KL(rho ‖ rho_hat) = rho·log(rho / rho_hat) + (1 − rho)·log((1 − rho) / (1 − rho_hat)),

the KL divergence between Bernoulli variables of means rho and rho_hat: zero when rho_hat = rho,
growing without bound as rho_hat nears 0 or 1. `sparsity=l1` penalises Σ_j |h_j| per image instead,
averaged over the batch (h ≥ 0, so the sum of activations): it pushes every activation down rather
than each unit's mean to rho. Ng's notes also add weight decay; Adam trains well here without it.

    x (B, C, H, W) → (B, n) → Linear → sigmoid → h (B, p)
    h (B, p) → Linear → sigmoid → (B, n) → (B, C, H, W)
"""

from __future__ import annotations

import math

import torch
from torch import nn

from gentool.api import Batch, DataSpec, TrainContext
from gentool.plugins._blocks import reconstruction_loss
from gentool.plugins.sparse_ae import Config

# rho_hat is kept this far inside (0, 1) so that a batch on which a unit saturates gives a large
# but finite KL (a float32 sigmoid reaches exactly 0 or 1).
RHO_HAT_MARGIN = 1e-6


def kl_sparsity(rho: float, activations: torch.Tensor) -> torch.Tensor:
    """Σ_j KL(rho ‖ rho_hat_j), with rho_hat_j the mean of (B, p) `activations` over the batch."""
    rho_hat = activations.mean(dim=0).clamp(RHO_HAT_MARGIN, 1 - RHO_HAT_MARGIN)  # (p,)
    kl = rho * torch.log(rho / rho_hat) + (1 - rho) * torch.log((1 - rho) / (1 - rho_hat))
    return kl.sum()


def l1_sparsity(activations: torch.Tensor) -> torch.Tensor:
    """Σ_j |h_j| per image, averaged over the batch."""
    return activations.abs().sum(dim=1).mean()


class SparseAE(nn.Module):
    def __init__(self, config: Config, spec: DataSpec) -> None:
        super().__init__()
        if (spec.height, spec.width) != (config.image_size, config.image_size):
            raise ValueError(
                f"sparse-ae was configured for {config.image_size}×{config.image_size} images, "
                f"the data is {spec.height}×{spec.width}"
            )
        self.config = config
        self.image_shape = (spec.channels, spec.height, spec.width)
        pixels = math.prod(self.image_shape)
        self.encoder = nn.Sequential(nn.Linear(pixels, config.code_dim), nn.Sigmoid())
        self.decoder = nn.Linear(config.code_dim, pixels)  # logits of the pixels

    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"sparse-ae": torch.optim.Adam(self.parameters(), lr=self.config.lr)}

    def training_step(self, batch: Batch, ctx: TrainContext) -> dict[str, torch.Tensor]:
        x = batch.images.flatten(1)  # (B, C, H, W) → (B, n) in [0, 1]
        h = self.encoder(x)  # (B, p) in (0, 1)
        recon = reconstruction_loss(self.decoder(h), x, self.config.loss)
        penalty = self.sparsity_penalty(h)
        return {
            "loss": recon + self.config.beta * penalty,
            "recon": recon.detach(),
            "sparsity": penalty.detach(),
            "mean_activation": h.mean().detach(),  # the average rho_hat_j, to watch it reach rho
        }

    def sparsity_penalty(self, h: torch.Tensor) -> torch.Tensor:
        if self.config.sparsity == "kl":
            return kl_sparsity(self.config.rho, h)
        return l1_sparsity(h)

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The hidden activations h (B, p), each in (0, 1)."""
        return self.encoder(x.flatten(1))

    @torch.no_grad()
    def decode(self, h: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.decoder(h)).view(-1, *self.image_shape)  # (B, n) → (B, C, H, W)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))
