"""Contractive AE (Rifai, Vincent, Muller, Glorot & Bengio 2011, "Contractive auto-encoders:
explicit invariance during feature extraction", ICML; notes §1.3.4).

The encoder h = f(x) is asked to change little when x moves a little, in any direction: the loss
adds the squared Frobenius norm of its Jacobian J_f(x) = ∂h/∂x (p × n), per image, averaged over
the batch,

    reconstruction (summed over pixels, averaged over the batch) + λ · ‖J_f(x)‖_F².

Reconstruction pulls the other way, so the code stays sensitive only along the directions in which
the data actually varies (the paper's "contraction" of the space around the data manifold).

For one sigmoid layer, h = σ(Wx + b), the Jacobian is diag(h ⊙ (1 − h)) W, so (paper eq. 4)

    ‖J_f(x)‖_F² = Σ_j (h_j (1 − h_j))² Σ_i W_ji²,

as cheap as the forward pass. With hidden layers (`hidden`), the exact Jacobian comes from autograd
instead: torch.func.jacrev of the encoder on one image, vmapped over the batch, p backward passes'
worth of work per image.

    x (B, C, H, W) → (B, n) → [Linear + sigmoid] per hidden layer → Linear → sigmoid → h (B, p)
    h → [Linear + sigmoid] per mirrored hidden layer → Linear → sigmoid → (B, n) → (B, C, H, W)
"""

from __future__ import annotations

import math

import torch
from torch import nn

from gentool.api import Batch, DataSpec, TrainContext
from gentool.plugins._blocks import mlp, reconstruction_loss
from gentool.plugins.contractive_ae import Config


class ContractiveAE(nn.Module):
    def __init__(self, config: Config, spec: DataSpec) -> None:
        super().__init__()
        if (spec.height, spec.width) != (config.image_size, config.image_size):
            raise ValueError(
                f"contractive-ae was configured for {config.image_size}×{config.image_size} "
                f"images, the data is {spec.height}×{spec.width}"
            )
        self.config = config
        self.image_shape = (spec.channels, spec.height, spec.width)
        pixels = math.prod(self.image_shape)
        sizes = (pixels, *config.hidden, config.code_dim)
        self.encoder = nn.Sequential(*mlp(sizes, nn.Sigmoid), nn.Sigmoid())
        self.decoder = mlp((config.code_dim, *reversed(config.hidden), pixels), nn.Sigmoid)

    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"contractive-ae": torch.optim.Adam(self.parameters(), lr=self.config.lr)}

    def training_step(self, batch: Batch, ctx: TrainContext) -> dict[str, torch.Tensor]:
        x = batch.images.flatten(1)  # (B, C, H, W) → (B, n) in [0, 1]
        h = self.encoder(x)  # (B, p)
        recon = reconstruction_loss(self.decoder(h), x, self.config.loss)
        jacobian = self.jacobian_norm_squared(x, h).mean()
        return {
            "loss": recon + self.config.contraction * jacobian,
            "recon": recon.detach(),
            "jacobian": jacobian.detach(),  # ‖J_f(x)‖_F², averaged over the batch
        }

    def jacobian_norm_squared(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """‖J_f(x)‖_F² of each image, (B,), for flat `x` (B, n) and its code `h` = f(x)."""
        if not self.config.hidden:  # one sigmoid layer: the closed form
            weight = self.encoder[0].weight  # W (p, n)
            return (h * (1 - h)).square() @ weight.square().sum(dim=1)  # (B, p) @ (p,) → (B,)
        jacobians = torch.func.vmap(torch.func.jacrev(self.encoder))(x)  # (B, p, n)
        return jacobians.square().sum(dim=(1, 2))

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x.flatten(1))  # (B, C, H, W) → (B, n) → (B, p)

    @torch.no_grad()
    def decode(self, h: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.decoder(h)).view(-1, *self.image_shape)  # → (B, C, H, W)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))
