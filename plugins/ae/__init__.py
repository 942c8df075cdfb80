"""AE: the undercomplete autoencoder, an MLP squeezing the image through a code smaller than it
(notes §1.3.1), with `linear` for the PCA case (notes §1.2.2). This module is what `gentool list`
loads: it must not import torch.
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
        32, "p, length of the code: below the C·H·W inputs, so the AE cannot just copy", min=1
    )
    linear: bool = option(
        False, "no nonlinearities anywhere: with MSE the code spans PCA's subspace (notes §1.2.2)"
    )
    loss: Literal["mse", "bce"] = option(
        "mse", "reconstruction loss, summed over pixels: mse, or bce (pixels in [0, 1])"
    )
    lr: float = option(1e-3, "Adam learning rate", min=0)

    def __post_init__(self) -> None:
        if self.linear and self.loss != "mse":
            raise ValueError(
                f"linear=true is the PCA case, which needs loss=mse (got loss={self.loss}): "
                "binary cross-entropy needs outputs squashed into (0, 1), a nonlinearity"
            )


def build(config: Config, spec: DataSpec):
    from gentool.plugins.ae.model import AE

    return AE(config, spec)


plugin = ModelPlugin(
    name="ae",
    summary="Undercomplete MLP autoencoder: a code smaller than the image; linear=true spans "
    "PCA's subspace",
    Config=Config,
    build=build,
    capabilities=Capabilities(reconstruct=True, encode=True),
    value_range=(0.0, 1.0),
    default_batch_size=64,
    test_config={"image_size": 8, "hidden": (16,), "code_dim": 4},
)
