"""cDCGAN: a convolutional conditional GAN with a projection discriminator, an auxiliary classifier
and class-conditional BatchNorm (Miyato & Koyama 2018; Odena et al. 2017; Dumoulin et al. 2017;
de Vries et al. 2017).

This module is what `gentool list` and `gentool info cdcgan` load: it must not import torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from gentool.api import Capabilities, DataSpec, ModelPlugin, option
from gentool.plugins._gan_options import (
    Augmentation,
    check_diffaugment,
    color_strength_option,
    diffaugment_option,
)


@dataclass(frozen=True)
class Config:
    image_size: int = option(32, "side of the square images: a power of two, 16 or more", min=16)
    latent_dim: int = option(100, "length of the noise vector z", min=1)
    g_features: int = option(64, "generator width: channels of its last hidden block", min=1)
    d_features: int = option(64, "discriminator width: channels of its first block", min=1)
    conditional_blocks: int = option(
        2,
        "generator blocks, from the 4×4 one, whose BatchNorm takes the label (a gain and bias "
        "per class); the finer ones run the fused ConvTransposeBNReLU",
        min=1,
    )
    spectral_norm: bool = option(
        True, "spectral normalisation of every discriminator layer, instead of its BatchNorm"
    )
    loss: Literal["hinge", "bce"] = option(
        "hinge", "adversarial loss: hinge (SN-GAN's) or bce (the original, non-saturating)"
    )
    classifier_weight: float = option(
        1.0,
        "weight of the auxiliary classifier's cross-entropy (AC-GAN): D also learns to name the "
        "class of real images, and G to draw images it names as the class asked for; 0 for none",
        min=0,
    )
    # Five times G's: with half the colour ranges every class reached 0.90 at the 15-minute
    # budget in three seeds of three, where G's weight left squares at 0.85 to 0.89; one of the
    # three lost the light grounds (docs/evaluation.md).
    d_classifier_weight: float | None = option(
        5.0,
        "weight of the classifier's cross-entropy in D's loss alone: a higher one makes D's "
        "classifier sharper, and G's images follow; none: the same as classifier_weight (runs "
        "from before this option read none); no effect without a classifier (classifier_weight "
        "0)",
        min=0,
    )
    # On by default: on the built-in shapes, D without it tells the first fakes apart at once and
    # G collapses towards one image for every z and label; see docs/evaluation.md.
    diffaugment: tuple[Augmentation, ...] = diffaugment_option(("color", "translation"))
    # Half the paper's ranges: at the full ones G learned the classes more slowly and FID at 15
    # minutes was twice as high; with no colour policy G dropped the light grounds
    # (docs/evaluation.md).
    color_strength: float = color_strength_option(0.5)
    # β1 = 0 as SN-GAN and BigGAN train: these three reached a higher label accuracy at the same
    # step than DCGAN's 2e-4, 0.5 and 0.999 (docs/evaluation.md).
    lr: float = option(5e-4, "Adam learning rate of both networks", min=0)
    beta1: float = option(0.0, "Adam β1", min=0, max=0.9999)
    beta2: float = option(0.99, "Adam β2", min=0, max=0.9999)

    def __post_init__(self) -> None:
        if self.image_size & (self.image_size - 1):
            raise ValueError(
                f"image_size must be a power of two (16, 32, 64, 128, …), got {self.image_size}"
            )
        check_diffaugment(self.diffaugment)
        hidden_blocks = generator_hidden_blocks(self.image_size)
        if self.conditional_blocks > hidden_blocks:
            raise ValueError(
                f"conditional_blocks is {self.conditional_blocks}, and the generator of "
                f"{self.image_size}×{self.image_size} images has {hidden_blocks} hidden blocks: "
                f"use 1 to {hidden_blocks}"
            )


def generator_hidden_blocks(image_size: int) -> int:
    """The generator's BatchNorm blocks: the 4×4 one, and one per doubling up to half the image
    side (the output layer makes the last doubling): log2(image_size) − 2."""
    return image_size.bit_length() - 3


def build(config: Config, spec: DataSpec):
    from gentool.plugins.cdcgan.model import CDCGAN

    return CDCGAN(config, spec)


plugin = ModelPlugin(
    name="cdcgan",
    summary="Convolutional conditional GAN: projection discriminator with an auxiliary "
    "classifier, class-conditional BatchNorm, spectral norm, hinge loss (Miyato & Koyama 2018)",
    Config=Config,
    build=build,
    capabilities=Capabilities(sample=True, conditional=True),
    value_range=(-1.0, 1.0),
    latent_distribution="standard normal",  # sample_latent: torch.randn
    default_batch_size=64,
    # the classifier, the narrower colour policy and D's own classifier weight came after the
    # first runs
    older_run_defaults={
        "classifier_weight": 0.0,
        "color_strength": 1.0,
        "d_classifier_weight": None,
    },
    test_config={
        "image_size": 16,
        "latent_dim": 8,
        "g_features": 8,
        "d_features": 8,
        "diffaugment": ("color", "translation", "cutout"),
        # The kit checks that one step moves every parameter. Under the hinge, ψ's bias has an
        # exactly zero gradient while every logit lies inside the margins, as at the start.
        "loss": "bce",
    },
)
