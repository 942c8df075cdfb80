"""WGAN-GP (Gulrajani et al. 2017, arXiv:1704.00028) as a gentool plugin.

gentool imports this module to list the model, so torch is imported in `build` only.
"""

from __future__ import annotations

from dataclasses import dataclass

from gentool.api import Capabilities, DataSpec, ModelPlugin, option


@dataclass(frozen=True)
class Config:
    image_size: int = option(64, "side of the square images: a power of two, 16 or more", min=16)
    latent_dim: int = option(128, "length of the noise vector z", min=1)
    g_features: int = option(64, "generator width: channels of its last hidden block", min=1)
    d_features: int = option(64, "critic width: channels of its first block", min=1)
    critic_steps: int = option(
        5, "critic updates per generator update (the paper's n_critic)", min=1
    )
    penalty: float = option(10.0, "weight λ of the gradient penalty (the paper's 10)", min=0)
    lr: float = option(1e-4, "Adam learning rate of both networks (the paper's 1e-4)", min=0)
    beta1: float = option(0.0, "Adam β1 (the paper's 0)", min=0, max=0.9999)
    beta2: float = option(0.9, "Adam β2 (the paper's 0.9)", min=0, max=0.9999)

    def __post_init__(self) -> None:
        if self.image_size & (self.image_size - 1):
            raise ValueError(f"image_size must be a power of two, got {self.image_size}")


def build(config: Config, spec: DataSpec):
    from gentool_wgan_gp.model import WGANGP

    return WGANGP(config, spec)


plugin = ModelPlugin(
    name="wgan-gp",
    summary="Wasserstein GAN with gradient penalty (Gulrajani et al. 2017)",
    Config=Config,
    build=build,
    capabilities=Capabilities(sample=True),
    value_range=(-1.0, 1.0),
    default_batch_size=64,
    test_config={
        "image_size": 16,
        "latent_dim": 8,
        "g_features": 4,
        "d_features": 4,
        "critic_steps": 2,
    },
)
