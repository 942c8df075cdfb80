"""cGAN (Mirza & Osindero 2014, arXiv:1411.1784): a GAN whose G and D both see the class label y.

The game of Goodfellow et al. (2014) with every distribution conditioned on y (paper eq. 2):

    min_G max_D  E_{x,y}[log D(x | y)] + E_{z,y}[log(1 − D(G(z | y) | y))]

D must now reject a real-looking image drawn for the wrong class, so G learns to draw the class it
is asked for, and sampling can choose one.

G: [z, e_G(y)] (B, latent_dim + label_dim) → MLP with LeakyReLU(0.2) → tanh → (B, C, H, W).
D: [flattened x, e_D(y)] (B, C·H·W + label_dim) → MLP with LeakyReLU(0.2) → (B,) logits.
e_G and e_D are separate learned embeddings (nn.Embedding(num_classes, label_dim)): the networks
are adversaries, and D's step must not move G's input.

Where this differs from the paper, and why:
- The paper feeds one-hot y into its own hidden layer (and z into another) before a joint layer;
  here y's embedding joins z, or the image, at the input. An embedding then a linear layer is a
  linear map of one-hot y, so with label_dim ≥ the number of classes nothing is lost, and the
  networks stay the plain MLPs of gan.
- As in gan: the non-saturating G loss −log D(G(z | y) | y) (Goodfellow et al. §3); LeakyReLU
  instead of the paper's ReLU and maxout units, no dropout; Adam (lr 2e-4, β1 0.5) instead of SGD
  with momentum.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from gentool.api import Batch, DataSpec, TrainContext
from gentool.plugins._blocks import mlp
from gentool.plugins._gan_losses import frozen
from gentool.plugins._labels import ConditionalSampling, check_classes
from gentool.plugins.cgan import Config

LEAKY_SLOPE = 0.2


def leaky_relu() -> nn.Module:
    return nn.LeakyReLU(LEAKY_SLOPE)


class Generator(nn.Module):
    def __init__(
        self,
        latent_dim: int,
        num_classes: int,
        label_dim: int,
        hidden: tuple[int, ...],
        image_shape: tuple[int, int, int],
    ) -> None:
        super().__init__()
        self.image_shape = image_shape
        self.label_embedding = nn.Embedding(num_classes, label_dim)
        sizes = (latent_dim + label_dim, *hidden, math.prod(image_shape))
        self.net = nn.Sequential(*mlp(sizes, leaky_relu), nn.Tanh())

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        zy = torch.cat([z, self.label_embedding(labels)], dim=1)  # (B, nz + label_dim)
        return self.net(zy).view(-1, *self.image_shape)  # (B, C·H·W) → (B, C, H, W)


class Discriminator(nn.Module):
    def __init__(
        self,
        image_shape: tuple[int, int, int],
        num_classes: int,
        label_dim: int,
        hidden: tuple[int, ...],
    ) -> None:
        super().__init__()
        self.label_embedding = nn.Embedding(num_classes, label_dim)
        self.net = mlp((math.prod(image_shape) + label_dim, *hidden, 1), leaky_relu)

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        xy = torch.cat([images.flatten(1), self.label_embedding(labels)], dim=1)
        return self.net(xy).flatten()  # (B, C·H·W + label_dim) → (B,) logits


class CGAN(ConditionalSampling, nn.Module):
    model_name = "cgan"
    manual_optimization = True  # D and G alternate, each with its own optimizer

    def __init__(self, config: Config, spec: DataSpec) -> None:
        super().__init__()
        check_classes(spec.num_classes, spec.class_names, "cgan")
        if (spec.height, spec.width) != (config.image_size, config.image_size):
            raise ValueError(
                f"cgan was configured for {config.image_size}×{config.image_size} images, "
                f"the data is {spec.height}×{spec.width}"
            )
        self.config = config
        self.class_names = spec.class_names
        image_shape = (spec.channels, spec.height, spec.width)
        self.generator = Generator(
            config.latent_dim, spec.num_classes, config.label_dim, config.g_hidden, image_shape
        )
        self.discriminator = Discriminator(
            image_shape, spec.num_classes, config.label_dim, config.d_hidden
        )

    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        betas = (self.config.beta1, self.config.beta2)
        return {
            "d": torch.optim.Adam(self.discriminator.parameters(), lr=self.config.lr, betas=betas),
            "g": torch.optim.Adam(self.generator.parameters(), lr=self.config.lr, betas=betas),
        }

    def training_step(self, batch: Batch, ctx: TrainContext) -> dict[str, torch.Tensor]:
        if batch.labels is None:
            raise ValueError("cgan trains on labelled batches, and this batch has no labels")
        real, labels = batch.images, batch.labels  # (B, C, H, W) in [-1, 1], (B,) class indexes
        batch_size = real.shape[0]

        # (1) Update D: maximise log D(x | y) + log(1 − D(G(z | y) | y)), with G fixed, d_steps
        # times. The fakes are drawn for the real batch's own labels (standard practice): D sees
        # each class as often among fakes as among real images, and the one thing that tells
        # them apart is the image. As in gan, each step draws fresh noise over the same batch.
        for _ in range(self.config.d_steps):
            with torch.no_grad():  # G is fixed: no graph through it
                fake = self.generator(self.sample_latent(batch_size), labels)
            ctx.optimizers["d"].zero_grad(set_to_none=True)
            real_logits = self.discriminator(real, labels)
            fake_logits = self.discriminator(fake, labels)
            loss_d = F.binary_cross_entropy_with_logits(
                real_logits, torch.ones_like(real_logits)
            ) + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
            ctx.backward(loss_d)
            ctx.step("d")

        # (2) Update G: maximise log D(G(z | y) | y), with D fixed: the non-saturating loss
        # (Goodfellow et al. §3). Fresh noise, and again the real batch's labels.
        ctx.optimizers["g"].zero_grad(set_to_none=True)
        fake = self.generator(self.sample_latent(batch_size), labels)
        with frozen(self.discriminator):
            fooled_logits = self.discriminator(fake, labels)
            loss_g = F.binary_cross_entropy_with_logits(
                fooled_logits, torch.ones_like(fooled_logits)
            )
            ctx.backward(loss_g)
        ctx.step("g")

        return {
            "loss_d": loss_d.detach(),
            "loss_g": loss_g.detach(),
            "d_real": torch.sigmoid(real_logits).mean().detach(),  # D(x | y), → 0.5 at equilibrium
            "d_fake": torch.sigmoid(fake_logits).mean().detach(),  # D(G(z | y) | y), last D step
        }
