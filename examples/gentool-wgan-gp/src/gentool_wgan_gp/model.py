"""WGAN-GP (Gulrajani et al. 2017, arXiv:1704.00028).

The critic D estimates the Wasserstein-1 distance between the data and the generator's
distribution; instead of clipping its weights to keep it 1-Lipschitz, a penalty pushes the norm of
its gradient towards 1 on points between real and generated images (the paper's Algorithm 1):

    L_D = D(G(z)) − D(x) + λ·(‖∇D(x̂)‖₂ − 1)²,  x̂ = ε·x + (1 − ε)·G(z),  ε ~ U[0, 1]
    L_G = −D(G(z))

The critic has no batch normalisation (the penalty is per sample, §4); the generator is DCGAN's,
built from gentool's fused ConvTransposeBNReLU blocks. Each batch serves all `critic_steps`
critic updates, each with fresh noise; the paper draws a new batch for each.
"""

from __future__ import annotations

import math

import torch
from gentool.api import Batch, DataSpec, TrainContext
from gentool.kernels import ConvTransposeBNReLU
from torch import nn

from gentool_wgan_gp import Config


class Generator(nn.Module):
    def __init__(self, latent_dim: int, channels: int, image_size: int, features: int) -> None:
        super().__init__()
        middle_blocks = int(math.log2(image_size)) - 3
        width = features * 2**middle_blocks
        layers: list[nn.Module] = [ConvTransposeBNReLU(latent_dim, width, 4, 1, 0)]  # 4×4
        for _ in range(middle_blocks):
            layers.append(ConvTransposeBNReLU(width, width // 2, 4, 2, 1))
            width //= 2
        layers += [nn.ConvTranspose2d(width, channels, 4, 2, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z[:, :, None, None])  # (B, nz) → (B, C, H, W)


class Critic(nn.Module):
    def __init__(self, channels: int, image_size: int, features: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width, size = channels, image_size
        while size > 4:
            out = features if width == channels else width * 2
            layers += [nn.Conv2d(width, out, 4, 2, 1), nn.LeakyReLU(0.2)]
            width, size = out, size // 2
        # (B, width, 4, 4) → (B, 1, 1, 1); no bias: a constant cancels out of both losses.
        layers.append(nn.Conv2d(width, 1, 4, 1, 0, bias=False))
        self.net = nn.Sequential(*layers)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images).flatten()  # (B,) scores, not probabilities


class WGANGP(nn.Module):
    manual_optimization = True

    def __init__(self, config: Config, spec: DataSpec) -> None:
        super().__init__()
        if (spec.height, spec.width) != (config.image_size, config.image_size):
            raise ValueError(
                f"wgan-gp was configured for {config.image_size}-pixel images, the data is "
                f"{spec.height}×{spec.width}"
            )
        self.config = config
        self.generator = Generator(
            config.latent_dim, spec.channels, config.image_size, config.g_features
        )
        self.critic = Critic(spec.channels, config.image_size, config.d_features)

    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        betas = (self.config.beta1, self.config.beta2)
        return {
            "d": torch.optim.Adam(self.critic.parameters(), lr=self.config.lr, betas=betas),
            "g": torch.optim.Adam(self.generator.parameters(), lr=self.config.lr, betas=betas),
        }

    def gradient_penalty(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """(‖∇D(x̂)‖₂ − 1)², averaged over the batch, at random points between real and fake."""
        mix = torch.rand(real.shape[0], 1, 1, 1, device=real.device)
        between = (mix * real + (1 - mix) * fake).requires_grad_(True)
        (gradient,) = torch.autograd.grad(self.critic(between).sum(), between, create_graph=True)
        return (gradient.flatten(1).norm(dim=1) - 1).square().mean()

    def training_step(self, batch: Batch, ctx: TrainContext) -> dict[str, torch.Tensor]:
        real = batch.images

        # (1) Update the critic n_critic times: minimise D(G(z)) − D(x) + λ·GP.
        for _ in range(self.config.critic_steps):
            ctx.optimizers["d"].zero_grad(set_to_none=True)
            with torch.no_grad():
                fake = self.generator(self.sample_latent(real.shape[0]))
            distance = self.critic(real).mean() - self.critic(fake).mean()
            penalty = self.gradient_penalty(real, fake)
            loss_d = -distance + self.config.penalty * penalty
            ctx.backward(loss_d)
            ctx.step("d")

        # (2) Update the generator: minimise −D(G(z)).
        ctx.optimizers["g"].zero_grad(set_to_none=True)
        loss_g = -self.critic(self.generator(self.sample_latent(real.shape[0]))).mean()
        ctx.backward(loss_g)
        ctx.step("g")

        return {
            "loss_d": loss_d.detach(),
            "loss_g": loss_g.detach(),
            "wasserstein": distance.detach(),  # the critic's estimate of W(data, G)
            "penalty": penalty.detach(),
        }

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
        return self.generator(z)

    @torch.no_grad()
    def sample(
        self,
        n: int,
        *,
        labels: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        return self.decode(self.sample_latent(n, generator=generator))
