"""DCGAN (Radford, Metz & Chintala 2015, arXiv:1511.06434), with every rule of the paper's §3–4.

- No pooling: D downsamples with strided convolutions, G upsamples with stride-2 transposed ones.
- BatchNorm in both networks except G's output layer and D's input layer.
- No fully connected hidden layers: z enters G as a 1×1 map, D ends in a convolution to one logit.
- G uses ReLU everywhere but its tanh output; D uses LeakyReLU with slope 0.2.
- Weights from N(0, 0.02) (BatchNorm scales from N(1, 0.02), shifts 0); Adam, lr 2e-4, β1 0.5.

Beyond the paper, `diffaugment` (Zhao et al. 2020) shows D augmented images, real and fake alike,
for data of a few thousand images.

At 64×64 the generator is z 100 → 4×4×512 → 8×8×256 → 16×16×128 → 32×32×64 → 64×64×C; other
powers of two add or remove middle blocks, and the discriminator mirrors it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from gentool.api import Batch, DataSpec, TrainContext
from gentool.kernels import ConvTransposeBNReLU
from gentool.plugins._diffaugment import diff_augment
from gentool.plugins._gan_losses import frozen
from gentool.plugins._latent import StandardNormalLatent
from gentool.plugins.dcgan import Config

LEAKY_SLOPE = 0.2


class Generator(nn.Module):
    def __init__(self, latent_dim: int, channels: int, image_size: int, features: int) -> None:
        super().__init__()
        middle_blocks = int(math.log2(image_size)) - 3  # stride-2 blocks between 4×4 and output
        width = features * 2**middle_blocks
        layers: list[nn.Module] = [
            ConvTransposeBNReLU(latent_dim, width, 4, 1, 0)
        ]  # (B, width, 4, 4)
        for _ in range(middle_blocks):
            layers.append(ConvTransposeBNReLU(width, width // 2, 4, 2, 1))  # doubles H and W
            width //= 2
        # The output layer has no BatchNorm (paper §3) and squashes to the data's [-1, 1].
        layers += [nn.ConvTranspose2d(width, channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z[:, :, None, None])  # (B, nz) → (B, nz, 1, 1) → (B, C, H, W)


class Discriminator(nn.Module):
    def __init__(self, channels: int, image_size: int, features: int) -> None:
        super().__init__()
        # No BatchNorm on the input layer (paper §3).
        layers: list[nn.Module] = [
            nn.Conv2d(channels, features, 4, 2, 1, bias=False),
            nn.LeakyReLU(LEAKY_SLOPE, inplace=True),
        ]
        width, size = features, image_size // 2
        while size > 4:
            layers += [
                nn.Conv2d(width, width * 2, 4, 2, 1, bias=False),
                nn.BatchNorm2d(width * 2),
                nn.LeakyReLU(LEAKY_SLOPE, inplace=True),
            ]
            width, size = width * 2, size // 2
        layers.append(nn.Conv2d(width, 1, 4, 1, 0, bias=False))  # (B, width, 4, 4) → (B, 1, 1, 1)
        self.net = nn.Sequential(*layers)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images).flatten()  # (B,) logits


def init_weights(module: nn.Module) -> None:
    """The paper's initialisation: N(0, 0.02) weights, BatchNorm scale N(1, 0.02) and shift 0."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d) and module.affine:
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class DCGAN(StandardNormalLatent, nn.Module):
    manual_optimization = True  # D and G alternate, each with its own optimizer

    def __init__(self, config: Config, spec: DataSpec) -> None:
        super().__init__()
        if (spec.height, spec.width) != (config.image_size, config.image_size):
            raise ValueError(
                f"dcgan was configured for {config.image_size}×{config.image_size} images, "
                f"the data is {spec.height}×{spec.width}"
            )
        self.config = config
        self.generator = Generator(
            config.latent_dim, spec.channels, config.image_size, config.g_features
        )
        self.discriminator = Discriminator(spec.channels, config.image_size, config.d_features)
        self.apply(init_weights)

    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        betas = (self.config.beta1, self.config.beta2)
        return {
            "d": torch.optim.Adam(self.discriminator.parameters(), lr=self.config.lr, betas=betas),
            "g": torch.optim.Adam(self.generator.parameters(), lr=self.config.lr, betas=betas),
        }

    def augment(self, images: torch.Tensor) -> torch.Tensor:
        """What D sees of an image, real or fake: DiffAugment's policies (none by default)."""
        return diff_augment(
            images, self.config.diffaugment, color_strength=self.config.color_strength
        )

    def training_step(self, batch: Batch, ctx: TrainContext) -> dict[str, torch.Tensor]:
        real = batch.images
        z = torch.randn(real.shape[0], self.config.latent_dim, device=real.device)
        fake = self.generator(z)

        # (1) Update D: maximise log D(x) + log(1 − D(G(z))), with G's output held fixed.
        ctx.optimizers["d"].zero_grad(set_to_none=True)
        real_logits = self.discriminator(self.augment(real))
        fake_logits = self.discriminator(self.augment(fake.detach()))
        loss_d = F.binary_cross_entropy_with_logits(
            real_logits, torch.ones_like(real_logits)
        ) + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
        ctx.backward(loss_d)
        ctx.step("d")

        # (2) Update G: maximise log D(G(z)), the non-saturating loss (Goodfellow et al. 2014 §3).
        ctx.optimizers["g"].zero_grad(set_to_none=True)
        with frozen(self.discriminator):
            fooled_logits = self.discriminator(self.augment(fake))
            loss_g = F.binary_cross_entropy_with_logits(
                fooled_logits, torch.ones_like(fooled_logits)
            )
            ctx.backward(loss_g)
        ctx.step("g")

        return {
            "loss_d": loss_d.detach(),
            "loss_g": loss_g.detach(),
            "d_real": torch.sigmoid(real_logits).mean().detach(),  # D(x), → 0.5 at equilibrium
            "d_fake": torch.sigmoid(fake_logits).mean().detach(),  # D(G(z)) before G's update
        }

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
