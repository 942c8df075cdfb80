"""Stacked autoencoder (course notes §1.3.5): autoencoders trained one after another, each on the
codes of the one before, then stacked and fine-tuned end to end. This module is what
`gentool list` loads: it must not import torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from gentool.api import Capabilities, DataSpec, ModelPlugin, option


@dataclass(frozen=True)
class Config:
    # MLPs flatten the image, so any size works; 32×32×3 = 3072 inputs to the first AE.
    image_size: int = option(32, "side of the square images (any size of 8 or more)", min=8)
    hidden: tuple[int, ...] = option(
        (256, 64),
        "code widths of the stacked AEs, pixel side first: one AE and one pretraining phase each",
        min=1,
    )
    layer_epochs: int = option(2, "epochs of each greedy pretraining phase (one per AE)", min=1)
    finetune_epochs: int = option(3, "epochs of the end-to-end fine-tuning phase", min=1)
    lr: float = option(1e-3, "Adam learning rate, in every phase", min=0)
    classifier_weight: float = option(
        1.0,
        "weight of the top-code classifier's cross-entropy in fine-tuning (labelled data only)",
        min=0,
    )

    def __post_init__(self) -> None:
        if not self.hidden:
            raise ValueError("hidden needs at least one code width, e.g. hidden=256,64")


def build(config: Config, spec: DataSpec):
    from gentool.plugins.stacked_ae.model import StackedAutoencoder

    return StackedAutoencoder(config, spec)


plugin = ModelPlugin(
    name="stacked-ae",
    summary="Stacked autoencoder: greedy layer-wise pretraining, then end-to-end fine-tuning "
    "(with a classifier on labelled data)",
    Config=Config,
    build=build,
    capabilities=Capabilities(reconstruct=True, encode=True),
    value_range=(0.0, 1.0),
    default_batch_size=64,
    test_config={"image_size": 8, "hidden": (16, 4), "layer_epochs": 1, "finetune_epochs": 1},
)
