"""The parts of a model that `gentool export` writes: small modules with the fixed signatures
exported files have, around the plugin's own methods."""

from __future__ import annotations

import torch
from torch import nn


class PartNetwork(nn.Module):
    """A part of a model with the fixed signature that exported files have."""

    input_names: tuple[str, ...]
    output_name: str

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        # Held outside the module tree, so that exporters keep only the tensors this part uses
        # (as constants): a GAN's decoder leaves its discriminator behind.
        self.held = (model,)


class DecoderNetwork(PartNetwork):
    """latent (B, ...) → images (B, C, H, W) in the plugin's value range."""

    input_names = ("latent",)
    output_name = "images"

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return self.held[0].decode(latent)


class ConditionalDecoderNetwork(PartNetwork):
    """latent (B, ...) and labels (B,) int64 → images (B, C, H, W) of those classes."""

    input_names = ("latent", "labels")
    output_name = "images"

    def forward(self, latent: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.held[0].decode(latent, labels=labels)


class EncoderNetwork(PartNetwork):
    """images (B, C, H, W) in the plugin's value range → codes (B, ...)."""

    input_names = ("images",)
    output_name = "codes"

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.held[0].encode(images)


class ConditionalEncoderNetwork(PartNetwork):
    """images (B, C, H, W) and labels (B,) int64 → codes (B, ...) of images of those classes."""

    input_names = ("images", "labels")
    output_name = "codes"

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.held[0].encode(images, labels=labels)
