"""Convolutional autoencoder (course notes §1.4): strided convolutions down to a code, transposed
convolutions back up. This module is what `gentool list` loads: it must not import torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from gentool.api import Capabilities, DataSpec, ModelPlugin, option


@dataclass(frozen=True)
class Config:
    image_size: int = option(
        32, "side of the square images: a power of two, 8 or more (8, 16, 32, …)", min=8
    )
    features: int = option(
        32, "channels of the encoder's first convolution (doubling after each)", min=1
    )
    # 64 numbers for a 32×32×3 image (3072): a real bottleneck, as an undercomplete AE needs.
    code_dim: int = option(64, "length of the code vector, the bottleneck", min=1)
    lr: float = option(1e-3, "Adam learning rate", min=0)
    loss: Literal["mse", "bce"] = option(
        "mse", "reconstruction loss, averaged over pixels: mse or bce (pixels in [0, 1])"
    )

    def __post_init__(self) -> None:
        if self.image_size & (self.image_size - 1):
            raise ValueError(
                f"image_size must be a power of two (8, 16, 32, 64, …), got {self.image_size}"
            )


def build(config: Config, spec: DataSpec):
    from gentool.plugins.conv_ae.model import ConvAutoencoder

    return ConvAutoencoder(config, spec)


plugin = ModelPlugin(
    name="conv-ae",
    summary="Convolutional autoencoder: strided convolutions to a code vector, "
    "transposed convolutions back",
    Config=Config,
    build=build,
    capabilities=Capabilities(reconstruct=True, encode=True),
    value_range=(0.0, 1.0),
    default_batch_size=64,
    test_config={"image_size": 8, "features": 4, "code_dim": 4},
)
