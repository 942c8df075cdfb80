"""Denoising AE: corrupt the input, reconstruct the clean image (Vincent et al. 2008; notes
§1.3.3). This module is what `gentool list` loads: it must not import torch.
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
        (256,),
        "widths of the encoder's hidden layers, image side first (the decoder mirrors them)",
        min=1,
    )
    code_dim: int = option(
        32, "length of the code; the corruption, not the width, keeps it from copying", min=1
    )
    noise: Literal["masking", "gaussian"] = option(
        "masking", "corruption: masking zeroes values at random, gaussian adds N(0, σ²) noise"
    )
    corruption: float = option(
        0.25, "masking: the probability that a value is zeroed; gaussian: σ", min=0
    )
    loss: Literal["mse", "bce"] = option(
        "mse", "reconstruction loss, summed over pixels: mse, or bce (pixels in [0, 1])"
    )
    lr: float = option(1e-3, "Adam learning rate", min=0)

    def __post_init__(self) -> None:
        if self.noise == "masking" and self.corruption >= 1:
            raise ValueError(
                f"masking noise zeroes each value with probability corruption, which must be "
                f"below 1 (every value erased leaves nothing to reconstruct from), got "
                f"{self.corruption}"
            )


def build(config: Config, spec: DataSpec):
    from gentool.plugins.denoising_ae.model import DenoisingAE

    return DenoisingAE(config, spec)


plugin = ModelPlugin(
    name="denoising-ae",
    summary="Denoising autoencoder: reconstruct the clean image from a corrupted one "
    "(Vincent et al. 2008)",
    Config=Config,
    build=build,
    capabilities=Capabilities(reconstruct=True, encode=True),
    value_range=(0.0, 1.0),
    default_batch_size=64,
    test_config={"image_size": 8, "hidden": (16,), "code_dim": 4},
)
