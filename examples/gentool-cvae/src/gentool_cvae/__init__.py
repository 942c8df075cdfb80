"""Conditional VAE (Sohn et al. 2015, "Learning Structured Output Representation using Deep
Conditional Generative Models"; Kingma et al. 2014, arXiv:1406.5298, M2's labelled case) as a
gentool plugin.

gentool imports this module to list the model, so torch is imported in `build` only.
"""

from __future__ import annotations

from dataclasses import dataclass

from gentool.api import Capabilities, DataSpec, ModelPlugin, option


@dataclass(frozen=True)
class Config:
    image_size: int = option(28, "side of the square images the data is resized to", min=4)
    latent_dim: int = option(16, "length of the code z", min=1)
    hidden: int = option(256, "width of the encoder's and the decoder's hidden layer", min=1)
    beta: float = option(1.0, "weight of the KL term (1: the evidence lower bound)", min=0)
    lr: float = option(1e-3, "Adam learning rate", min=0)


def build(config: Config, spec: DataSpec):
    from gentool_cvae.model import ConditionalVAE

    if not spec.class_names:
        raise ValueError("cvae learns one distribution per class: train it on labelled data")
    return ConditionalVAE(config, spec)


plugin = ModelPlugin(
    name="cvae",
    summary="Conditional VAE: encoder q(z|x,y) and decoder p(x|z,y) both see the class",
    Config=Config,
    build=build,
    capabilities=Capabilities(sample=True, reconstruct=True, encode=True, conditional=True),
    value_range=(0.0, 1.0),  # sigmoid outputs, binary cross-entropy targets
    latent_distribution="standard normal",
    default_batch_size=64,
    test_config={"image_size": 8, "latent_dim": 4, "hidden": 16},
)
