"""AE: the undercomplete autoencoder (notes §1.2.2 and §1.3.1).

An encoder f maps the image x to a code y = f(x) of p numbers, fewer than the n = C·H·W pixels,
and a decoder g maps the code back, x' = g(y). Trained to make x' close to x, the narrow code can
only keep what matters most in the data. The loss per image is the reconstruction error summed
over pixels (squared error, or binary cross-entropy for pixels in [0, 1]), averaged over the batch.

    x (B, C, H, W) → (B, n) → Linear + ReLU per hidden layer → Linear → y (B, p)
    y (B, p) → Linear + ReLU per mirrored hidden layer → Linear → sigmoid → (B, n) → (B, C, H, W)

The code layer itself is left linear (as in Hinton & Salakhutdinov 2006): the decoder is what
squashes into [0, 1].

`linear`: no ReLU and no sigmoid, and squared error. Then x' = W'(Wx + b) + b' is an affine map of
rank at most p, and the best one under squared error projects onto the span of the top p principal
components: the AE spans the same subspace as PCA (Baldi & Hornik 1989; notes §1.2.2), though its
code is not the principal components themselves (any invertible mix of them does as well).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from gentool.api import Batch, DataSpec, TrainContext
from gentool.plugins._blocks import mlp, reconstruction_loss
from gentool.plugins.ae import Config


class AE(nn.Module):
    def __init__(self, config: Config, spec: DataSpec) -> None:
        super().__init__()
        if (spec.height, spec.width) != (config.image_size, config.image_size):
            raise ValueError(
                f"ae was configured for {config.image_size}×{config.image_size} images, "
                f"the data is {spec.height}×{spec.width}"
            )
        self.config = config
        self.image_shape = (spec.channels, spec.height, spec.width)
        pixels = math.prod(self.image_shape)
        if config.code_dim >= pixels:
            raise ValueError(
                f"ae is undercomplete: code_dim must be below the {pixels} inputs "
                f"(C·H·W = {spec.channels}·{spec.height}·{spec.width}), got {config.code_dim}; "
                "for a wider code use sparse-ae, denoising-ae or contractive-ae"
            )
        activation = nn.Identity if config.linear else nn.ReLU
        self.encoder = mlp((pixels, *config.hidden, config.code_dim), activation)
        self.decoder = mlp((config.code_dim, *reversed(config.hidden), pixels), activation)

    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"ae": torch.optim.Adam(self.parameters(), lr=self.config.lr)}

    def training_step(self, batch: Batch, ctx: TrainContext) -> dict[str, torch.Tensor]:
        x = batch.images  # (B, C, H, W) in [0, 1]
        output = self.decoder(self.encoder(x.flatten(1)))  # (B, n): logits, or pixels if linear
        recon = self.reconstruction_loss(output, x.flatten(1))
        return {"loss": recon, "recon": recon.detach()}

    def reconstruction_loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Summed over pixels, averaged over the batch; `output` is the decoder's raw (B, n)."""
        if self.config.linear:  # no sigmoid: the least-squares problem whose answer is PCA's
            return F.mse_loss(output, target, reduction="none").sum(dim=1).mean()
        return reconstruction_loss(output, target, self.config.loss)

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x.flatten(1))  # (B, C, H, W) → (B, n) → (B, p)

    @torch.no_grad()
    def decode(self, y: torch.Tensor) -> torch.Tensor:
        output = self.decoder(y).view(-1, *self.image_shape)  # (B, p) → (B, n) → (B, C, H, W)
        if self.config.linear:
            # A linear map is unbounded, so a few pixels land outside [0, 1]. Clamping here, for
            # the output only, keeps images in the value range; the loss sees the raw output, so
            # training stays the linear least-squares problem whose answer is PCA's subspace.
            return output.clamp(0, 1)
        return torch.sigmoid(output)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))
