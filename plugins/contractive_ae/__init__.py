"""Contractive AE: penalise the encoder's sensitivity to its input, λ‖J_f(x)‖_F² (Rifai et al.
2011; notes §1.3.4). This module is what `gentool list` loads: it must not import torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from gentool.api import Capabilities, DataSpec, ModelPlugin, option


@dataclass(frozen=True)
class Config:
    # MLPs flatten the image, so any size works; the first layer has C·H·W inputs (3072 at 32×32).
    image_size: int = option(32, "side of the square images (any size of 4 or more)", min=4)
    hidden: tuple[int, ...] = option(
        (),
        "widths of the encoder's hidden sigmoid layers, image side first; empty: one sigmoid "
        "layer, whose Jacobian norm has a closed form (else autograd computes it, slower)",
        min=1,
    )
    code_dim: int = option(256, "length of the code, sigmoid units", min=1)
    contraction: float = option(
        0.1, "λ, weight of the contraction penalty ‖J_f(x)‖_F²; 0 is a plain autoencoder", min=0
    )
    loss: Literal["mse", "bce"] = option(
        "mse", "reconstruction loss, summed over pixels: mse, or bce (pixels in [0, 1])"
    )
    lr: float = option(1e-3, "Adam learning rate", min=0)


def build(config: Config, spec: DataSpec):
    from gentool.plugins.contractive_ae.model import ContractiveAE

    return ContractiveAE(config, spec)


plugin = ModelPlugin(
    name="contractive-ae",
    summary="Contractive autoencoder: recon + λ‖J_f(x)‖_F², the encoder's Jacobian "
    "(Rifai et al. 2011)",
    Config=Config,
    build=build,
    capabilities=Capabilities(reconstruct=True, encode=True),
    value_range=(0.0, 1.0),
    default_batch_size=64,
    test_config={"image_size": 8, "code_dim": 8},
)
