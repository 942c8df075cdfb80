"""Convolutional autoencoder (course notes §1.4).

The encoder halves the image with strided convolutions (k4, s2, p1), each followed by BatchNorm
and LeakyReLU(0.2), until a 4×4 map is left; a Linear layer turns that map into the code, a vector
of `code_dim` numbers. The decoder mirrors it: a Linear layer back to the 4×4 map, then transposed
convolutions (k4, s2, p1), each doubling H and W, with BatchNorm and ReLU on the hidden ones (the
fused `ConvTransposeBNReLU`), and a sigmoid on the last, so that reconstructions are pixels in
[0, 1]. As the notes say, a transposed convolution restores the shape of its convolution's input,
not its values: the values are what training learns.

Why a Linear code rather than the 4×4 map itself: the map holds 16·(features·2^k) numbers, 2048 at
32×32 with 32 features, two thirds of the 3072 pixels, which is hardly a bottleneck; a vector of
`code_dim` makes the bottleneck a choice independent of the image size, and gives `gentool encode`
one flat code per image, like the other autoencoders.

At 32×32: x (C, 32, 32) → (f, 16, 16) → (2f, 8, 8) → (4f, 4, 4) → code (code_dim)
→ (4f, 4, 4) → (2f, 8, 8) → (f, 16, 16) → (C, 32, 32).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from gentool.api import Batch, DataSpec, TrainContext
from gentool.kernels import ConvTransposeBNReLU
from gentool.plugins.conv_ae import Config

TOP_SIZE = 4  # side of the smallest feature map, where the code is taken


class Encoder(nn.Module):
    def __init__(self, channels: int, image_size: int, features: int, code_dim: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width, size = channels, image_size
        while size > TOP_SIZE:  # each block halves H and W
            out = width * 2 if layers else features
            layers += [
                nn.Conv2d(width, out, 4, 2, 1, bias=False),  # BatchNorm brings its own bias
                nn.BatchNorm2d(out),
                nn.LeakyReLU(0.2),
            ]
            width, size = out, size // 2
        self.features = nn.Sequential(*layers)
        self.to_code = nn.Linear(width * TOP_SIZE * TOP_SIZE, code_dim)
        self.top_width = width

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        hidden = self.features(images).flatten(1)  # (B, width·4·4)
        return self.to_code(hidden)  # (B, code_dim)


class Decoder(nn.Module):
    def __init__(self, channels: int, image_size: int, top_width: int, code_dim: int) -> None:
        super().__init__()
        self.top_width = top_width
        self.from_code = nn.Linear(code_dim, top_width * TOP_SIZE * TOP_SIZE)
        blocks: list[nn.Module] = [nn.BatchNorm2d(top_width), nn.ReLU()]
        width = top_width
        for _ in range(int(math.log2(image_size // TOP_SIZE)) - 1):  # 4×4 up to image_size / 2
            blocks.append(ConvTransposeBNReLU(width, width // 2, 4, 2, 1))
            width //= 2
        blocks.append(nn.ConvTranspose2d(width, channels, 4, 2, 1))  # logits of the pixels
        self.blocks = nn.Sequential(*blocks)

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        hidden = self.from_code(code).view(-1, self.top_width, TOP_SIZE, TOP_SIZE)  # (B, w, 4, 4)
        return self.blocks(hidden)  # (B, C, H, W) logits


class ConvAutoencoder(nn.Module):
    def __init__(self, config: Config, spec: DataSpec) -> None:
        super().__init__()
        if (spec.height, spec.width) != (config.image_size, config.image_size):
            raise ValueError(
                f"conv-ae was configured for {config.image_size}×{config.image_size} images, "
                f"the data is {spec.height}×{spec.width}"
            )
        self.config = config
        self.encoder = Encoder(spec.channels, config.image_size, config.features, config.code_dim)
        self.decoder = Decoder(
            spec.channels, config.image_size, self.encoder.top_width, config.code_dim
        )

    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"conv-ae": torch.optim.Adam(self.parameters(), lr=self.config.lr)}

    def training_step(self, batch: Batch, ctx: TrainContext) -> dict[str, torch.Tensor]:
        x = batch.images  # (B, C, H, W) in [0, 1]
        logits = self.decoder(self.encoder(x))
        if self.config.loss == "bce":
            loss = F.binary_cross_entropy_with_logits(logits, x)
            mse = F.mse_loss(torch.sigmoid(logits).detach(), x)
        else:
            loss = F.mse_loss(torch.sigmoid(logits), x)
            mse = loss.detach()
        return {"loss": loss, "mse": mse}  # "mse": per pixel, in [0, 1] pixel units

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)  # (B, code_dim)

    @torch.no_grad()
    def decode(self, code: torch.Tensor, *, labels: torch.Tensor | None = None) -> torch.Tensor:
        return torch.sigmoid(self.decoder(code))  # (B, C, H, W) in [0, 1]

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))
