"""Deep autoencoder (Hinton & Salakhutdinov, Science 2006; course notes §1.3.6): a stack of RBMs
pretrained with contrastive divergence, unrolled into an encoder and a mirrored decoder, then
fine-tuned by backpropagation. This module is what `gentool list` loads: it must not import torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from gentool.api import Capabilities, DataSpec, ModelPlugin, option


@dataclass(frozen=True)
class Config:
    # MLPs flatten the image, so any size works; 32×32×3 = 3072 visible units in the first RBM.
    image_size: int = option(32, "side of the square images (any size of 8 or more)", min=8)
    hidden: tuple[int, ...] = option(
        (1000, 500, 250, 30),
        "hidden widths of the stacked RBMs, pixel side first; the last is the linear code "
        "(the paper's MNIST network)",
        min=1,
    )
    rbm_epochs: int = option(2, "epochs of CD-1 pretraining for each RBM", min=1)
    finetune_epochs: int = option(3, "epochs of backpropagation through the unrolled net", min=1)
    # The paper's 0.1 suits 784 mostly black MNIST pixels; on 3072 colour pixels each hidden
    # unit's input moves about ten times as far per step, and 0.1 drives them all into saturation.
    rbm_lr: float = option(
        0.01, "CD-1 learning rate of the logistic RBMs (paper: 0.1, on MNIST)", min=0
    )
    code_rbm_lr: float = option(
        1e-3, "CD-1 learning rate of the top RBM, with linear hidden units (paper: 0.001)", min=0
    )
    rbm_momentum: float = option(
        0.9, "momentum of the CD-1 updates (paper: 0.5, then 0.9)", min=0, max=1
    )
    weight_cost: float = option(
        2e-4, "L2 weight decay of the RBM weights in CD-1 (paper: 0.0002)", min=0
    )
    lr: float = option(1e-3, "Adam learning rate of the fine-tuning", min=0)
    loss: Literal["bce", "mse"] = option(
        "bce",
        "fine-tuning loss, averaged over pixels: bce (the paper's cross-entropy) or mse",
    )

    def __post_init__(self) -> None:
        if not self.hidden:
            raise ValueError("hidden needs at least one RBM width, e.g. hidden=500,30")


def build(config: Config, spec: DataSpec):
    from gentool.plugins.deep_ae.model import DeepAutoencoder

    return DeepAutoencoder(config, spec)


plugin = ModelPlugin(
    name="deep-ae",
    summary="Deep autoencoder: RBMs pretrained with CD-1, unrolled and fine-tuned "
    "(Hinton & Salakhutdinov 2006)",
    Config=Config,
    build=build,
    capabilities=Capabilities(reconstruct=True, encode=True),
    value_range=(0.0, 1.0),
    default_batch_size=64,
    test_config={"image_size": 8, "hidden": (16, 4), "rbm_epochs": 1, "finetune_epochs": 1},
)
