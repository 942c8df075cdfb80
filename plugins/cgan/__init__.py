"""cGAN: conditional GAN with MLPs (Mirza & Osindero 2014, arXiv:1411.1784).

This module is what `gentool list` and `gentool info cgan` load: it must not import torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from gentool.api import Capabilities, DataSpec, ModelPlugin, option


@dataclass(frozen=True)
class Config:
    # As in gan: MLPs flatten the image, so any size works, and 32 keeps the nets small.
    image_size: int = option(32, "side of the square images (any size of 8 or more)", min=8)
    latent_dim: int = option(100, "length of the noise vector z (the paper's 100)", min=1)
    # An embedding followed by a linear layer can do what the paper's one-hot y input does
    # whenever label_dim ≥ the number of classes; 10 covers 10-class sets (the paper's MNIST
    # digits, and the 6 built-in shapes) and stays small beside z and the image.
    label_dim: int = option(10, "length of the learned class embedding given to G and D", min=1)
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
        "k, discriminator steps per generator step (Goodfellow et al.'s Algorithm 1)",
        min=1,
        max=100,  # each step of training would take k of D's; far more is a slip, not a choice
    )

    def __post_init__(self) -> None:
        for name in ("g_hidden", "d_hidden"):
            if not getattr(self, name):
                raise ValueError(f"{name} needs at least one hidden layer width, e.g. {name}=256")


def build(config: Config, spec: DataSpec):
    from gentool.plugins.cgan.model import CGAN

    return CGAN(config, spec)


plugin = ModelPlugin(
    name="cgan",
    summary="Conditional GAN: G and D both see the class label, so you choose what to draw "
    "(Mirza & Osindero 2014)",
    Config=Config,
    build=build,
    capabilities=Capabilities(sample=True, conditional=True),
    value_range=(-1.0, 1.0),
    latent_distribution="standard normal",  # sample_latent: torch.randn
    default_batch_size=64,  # as gan; the paper used 100
    test_config={
        "image_size": 16,
        "latent_dim": 8,
        "label_dim": 4,
        "g_hidden": (16, 32),
        "d_hidden": (32, 16),
    },
)
