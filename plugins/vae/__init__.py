"""VAE: the variational autoencoder (Kingma & Welling 2013, arXiv:1312.6114), with β (Higgins et al.
2017, β-VAE). This module is what `gentool list` loads: it must not import torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from gentool.api import Capabilities, DataSpec, ModelPlugin, option


@dataclass(frozen=True)
class Config:
    image_size: int = option(64, "side of the square images: a power of two, 16 or more", min=16)
    latent_dim: int = option(32, "length of the code z", min=1)
    features: int = option(
        32, "channels of the encoder's first convolution (doubling after)", min=1
    )
    beta: float = option(
        1.0, "weight of the KL term; > 1 is the β-VAE, 0 a plain autoencoder", min=0
    )
    recon_loss: Literal["bce", "mse"] = option(
        "bce", "reconstruction loss, summed over pixels: bce (pixels in [0, 1]) or mse"
    )
    lr: float = option(1e-3, "Adam learning rate", min=0)

    def __post_init__(self) -> None:
        if self.image_size & (self.image_size - 1):
            raise ValueError(
                f"image_size must be a power of two (16, 32, 64, 128, …), got {self.image_size}"
            )


def build(config: Config, spec: DataSpec):
    from gentool.plugins.vae.model import VAE

    return VAE(config, spec)


plugin = ModelPlugin(
    name="vae",
    summary="Variational autoencoder: conv encoder to (μ, log σ²), reparameterised z, β·KL",
    Config=Config,
    build=build,
    capabilities=Capabilities(sample=True, reconstruct=True, encode=True),
    value_range=(0.0, 1.0),
    latent_distribution="standard normal",  # sample_latent: torch.randn
    default_batch_size=64,
    test_config={"image_size": 16, "latent_dim": 4, "features": 4},
)
