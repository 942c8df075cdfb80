"""DCGAN: deep convolutional GAN (Radford, Metz & Chintala 2015, arXiv:1511.06434).

This module is what `gentool list` and `gentool info dcgan` load: it must not import torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from gentool.api import Capabilities, DataSpec, ModelPlugin, option
from gentool.plugins._gan_options import (
    Augmentation,
    check_diffaugment,
    color_strength_option,
    diffaugment_option,
)


@dataclass(frozen=True)
class Config:
    image_size: int = option(64, "side of the square images: a power of two, 16 or more", min=16)
    latent_dim: int = option(100, "length of the noise vector z (the paper's 100)", min=1)
    g_features: int = option(64, "generator width: channels of its last hidden block", min=1)
    d_features: int = option(64, "discriminator width: channels of its first block", min=1)
    lr: float = option(2e-4, "Adam learning rate of both networks (paper §4)", min=0)
    beta1: float = option(
        0.5, "Adam β1; the paper lowers 0.9 to 0.5 to damp oscillation", min=0, max=0.9999
    )
    beta2: float = option(0.999, "Adam β2", min=0, max=0.9999)
    diffaugment: tuple[Augmentation, ...] = diffaugment_option()
    color_strength: float = color_strength_option(1.0)

    def __post_init__(self) -> None:
        check_diffaugment(self.diffaugment)
        if self.image_size & (self.image_size - 1):
            raise ValueError(
                f"image_size must be a power of two (16, 32, 64, 128, …), got {self.image_size}"
            )


def build(config: Config, spec: DataSpec):
    from gentool.plugins.dcgan.model import DCGAN

    return DCGAN(config, spec)


plugin = ModelPlugin(
    name="dcgan",
    summary="Deep convolutional GAN: strided convolutions, batch norm, Adam (Radford et al. 2015)",
    Config=Config,
    build=build,
    capabilities=Capabilities(sample=True),
    value_range=(-1.0, 1.0),
    latent_distribution="standard normal",  # sample_latent: torch.randn
    default_batch_size=128,
    test_config={"image_size": 16, "latent_dim": 8, "g_features": 8, "d_features": 8},
)
