"""tiny-vae: a gentool model plugin.

gentool imports this module to list the model, so it must stay light: torch is imported in
`build`, never at the top of this file (the conformance kit checks this).
"""

from __future__ import annotations

from dataclasses import dataclass

from gentool.api import Capabilities, DataSpec, ModelPlugin, option


@dataclass(frozen=True)
class Config:
    image_size: int = option(32, "side of the square images the data is resized to", min=4)
    hidden: int = option(256, "width of the hidden layers", min=1)
    latent_dim: int = option(16, "length of the code z", min=1)
    lr: float = option(1e-3, "Adam learning rate", min=0)


def build(config: Config, spec: DataSpec):
    from gentool_tiny_vae.model import Model

    return Model(config, spec)


plugin = ModelPlugin(
    name="tiny-vae",
    summary="A small MLP variational autoencoder (replace with your model)",
    Config=Config,
    build=build,
    capabilities=Capabilities(sample=True, reconstruct=True, encode=True),
    value_range=(0.0, 1.0),
    latent_distribution="standard normal",
    test_config={"image_size": 8, "hidden": 16, "latent_dim": 4},
)
