"""GAN: generative adversarial nets with MLPs (Goodfellow et al. 2014, arXiv:1406.2661).

This module is what `gentool list` and `gentool info gan` load: it must not import torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from gentool.api import Capabilities, DataSpec, ModelPlugin, option


@dataclass(frozen=True)
class Config:
    # MLPs flatten the image, so any size works; parameters grow with its pixels (32×32×3 = 3072
    # inputs to D's first layer), and 32 keeps both nets near 4M parameters and fast on a CPU.
    image_size: int = option(32, "side of the square images (any size of 8 or more)", min=8)
    latent_dim: int = option(100, "length of the noise vector z (the notes' 100)", min=1)
    # G widens towards the image and D narrows from it, mirror images of each other, so that
    # neither side starts with more capacity; 1024 units at the image end is a third of 3072.
    g_hidden: tuple[int, ...] = option(
        (256, 512, 1024), "widths of the generator's hidden layers, z side first", min=1
    )
    d_hidden: tuple[int, ...] = option(
        (1024, 512, 256), "widths of the discriminator's hidden layers, image side first", min=1
    )
    lr: float = option(2e-4, "Adam learning rate of both networks (Radford et al. 2015)", min=0)
    beta1: float = option(0.5, "Adam β1, lowered from 0.9 to damp oscillation", min=0, max=0.9999)
    beta2: float = option(0.999, "Adam β2", min=0, max=0.9999)
    d_steps: int = option(
        1,
        "k, discriminator steps per generator step (Algorithm 1; the paper's k = 1)",
        min=1,
        max=100,  # each step of training would take k of D's; far more is a slip, not a choice
    )

    def __post_init__(self) -> None:
        for name in ("g_hidden", "d_hidden"):
            if not getattr(self, name):
                raise ValueError(f"{name} needs at least one hidden layer width, e.g. {name}=256")


def build(config: Config, spec: DataSpec):
    from gentool.plugins.gan.model import GAN

    return GAN(config, spec)


plugin = ModelPlugin(
    name="gan",
    summary="The original GAN: MLP generator and discriminator, non-saturating loss "
    "(Goodfellow et al. 2014)",
    Config=Config,
    build=build,
    capabilities=Capabilities(sample=True),
    value_range=(-1.0, 1.0),
    latent_distribution="standard normal",  # sample_latent: torch.randn
    default_batch_size=64,  # the API default; the paper's code used 100, any size near it works
    test_config={"image_size": 16, "latent_dim": 8, "g_hidden": (16, 32), "d_hidden": (32, 16)},
)
