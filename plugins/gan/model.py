"""GAN (Goodfellow et al. 2014, arXiv:1406.2661): a generator G and a discriminator D, both MLPs.

D learns to tell real images from G's; G learns to fool D. Together they play the minimax game

    min_G max_D  E_x[log D(x)] + E_z[log(1 − D(G(z)))]        (paper eq. 1)

trained as in the paper's Algorithm 1: k steps on D (`d_steps`), then one step on G.

G: z (B, latent_dim) → Linear + LeakyReLU(0.2) per hidden layer → Linear → tanh → (B, C, H, W).
D: (B, C, H, W) flattened → Linear + LeakyReLU(0.2) per hidden layer → Linear → (B,) logits.

Where this differs from the paper, and why:
- G minimises −log D(G(z)), not log(1 − D(G(z))): the paper's own advice (§3), since early in
  training D rejects G's samples confidently and log(1 − D(G(z))) then gives G almost no gradient.
- The paper's nets used ReLU and sigmoid units in G, maxout units and dropout in D; here both use
  LeakyReLU(0.2) (as the course notes do) and G ends in tanh, for pixels scaled to [-1, 1].
- The paper trained with SGD and momentum; here Adam with lr 2e-4 and β1 0.5, the settings of
  Radford et al. 2015 (arXiv:1511.06434) that most GANs have used since.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from gentool.api import Batch, DataSpec, TrainContext
from gentool.plugins._blocks import mlp
from gentool.plugins._gan_losses import frozen
from gentool.plugins._latent import StandardNormalLatent
from gentool.plugins.gan import Config

LEAKY_SLOPE = 0.2


def leaky_relu() -> nn.Module:
    return nn.LeakyReLU(LEAKY_SLOPE)


class Generator(nn.Module):
    def __init__(
        self, latent_dim: int, hidden: tuple[int, ...], image_shape: tuple[int, int, int]
    ) -> None:
        super().__init__()
        self.image_shape = image_shape
        sizes = (latent_dim, *hidden, math.prod(image_shape))
        self.net = nn.Sequential(*mlp(sizes, leaky_relu), nn.Tanh())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).view(-1, *self.image_shape)  # (B, nz) → (B, C·H·W) → (B, C, H, W)


class Discriminator(nn.Module):
    def __init__(self, image_shape: tuple[int, int, int], hidden: tuple[int, ...]) -> None:
        super().__init__()
        self.net = mlp((math.prod(image_shape), *hidden, 1), leaky_relu)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images.flatten(1)).flatten()  # (B, C, H, W) → (B, C·H·W) → (B,) logits


class GAN(StandardNormalLatent, nn.Module):
    manual_optimization = True  # D and G alternate, each with its own optimizer

    def __init__(self, config: Config, spec: DataSpec) -> None:
        super().__init__()
        if (spec.height, spec.width) != (config.image_size, config.image_size):
            raise ValueError(
                f"gan was configured for {config.image_size}×{config.image_size} images, "
                f"the data is {spec.height}×{spec.width}"
            )
        self.config = config
        image_shape = (spec.channels, spec.height, spec.width)
        self.generator = Generator(config.latent_dim, config.g_hidden, image_shape)
        self.discriminator = Discriminator(image_shape, config.d_hidden)

    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        betas = (self.config.beta1, self.config.beta2)
        return {
            "d": torch.optim.Adam(self.discriminator.parameters(), lr=self.config.lr, betas=betas),
            "g": torch.optim.Adam(self.generator.parameters(), lr=self.config.lr, betas=betas),
        }

    def training_step(self, batch: Batch, ctx: TrainContext) -> dict[str, torch.Tensor]:
        real = batch.images  # (B, C, H, W) in [-1, 1]
        batch_size = real.shape[0]

        # (1) Update D: maximise log D(x) + log(1 − D(G(z))), with G fixed, k = d_steps times.
        # Algorithm 1 draws fresh noise and fresh real images for each of the k steps; here each
        # step draws fresh noise but all reuse this batch's real images: the trainer hands the
        # model one batch per step, so an epoch stays one pass over the data whatever k is.
        for _ in range(self.config.d_steps):
            with torch.no_grad():  # G is fixed: no graph through it
                fake = self.generator(self.sample_latent(batch_size))
            ctx.optimizers["d"].zero_grad(set_to_none=True)
            real_logits = self.discriminator(real)
            fake_logits = self.discriminator(fake)
            loss_d = F.binary_cross_entropy_with_logits(
                real_logits, torch.ones_like(real_logits)
            ) + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
            ctx.backward(loss_d)
            ctx.step("d")

        # (2) Update G: maximise log D(G(z)), with D fixed: the non-saturating loss
        # −log D(G(z)) = BCE(D(G(z)), 1) (paper §3). Fresh noise, as in Algorithm 1.
        ctx.optimizers["g"].zero_grad(set_to_none=True)
        with frozen(self.discriminator):
            fooled_logits = self.discriminator(self.generator(self.sample_latent(batch_size)))
            loss_g = F.binary_cross_entropy_with_logits(
                fooled_logits, torch.ones_like(fooled_logits)
            )
            ctx.backward(loss_g)
        ctx.step("g")

        return {
            "loss_d": loss_d.detach(),
            "loss_g": loss_g.detach(),
            "d_real": torch.sigmoid(real_logits).mean().detach(),  # D(x), → 0.5 at equilibrium
            "d_fake": torch.sigmoid(fake_logits).mean().detach(),  # D(G(z)) at the last D step
        }

    @torch.no_grad()
    def decode(self, z: torch.Tensor, *, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.generator(z)  # (n, C, H, W) in [-1, 1]

    @torch.no_grad()
    def sample(
        self,
        n: int,
        *,
        labels: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        if labels is not None:
            raise ValueError("gan is unconditional and takes no labels: cgan draws chosen classes")
        return self.decode(self.sample_latent(n, generator=generator))
