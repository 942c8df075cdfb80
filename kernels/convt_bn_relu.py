"""ConvTranspose2d + BatchNorm2d + ReLU as one module.

The module subclasses `nn.Sequential` of the three unfused layers, so its parameters, buffers and
state_dict keys ("0.weight", "1.weight", "1.running_mean", …) are exactly theirs: checkpoints move
between this module and a plain `nn.Sequential(ConvTranspose2d, BatchNorm2d, ReLU)` either way.
"""

from __future__ import annotations

from torch import nn


class ConvTransposeBNReLU(nn.Sequential):
    """A drop-in for `nn.Sequential(nn.ConvTranspose2d, nn.BatchNorm2d, nn.ReLU)`."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        *,
        bias: bool = False,
        eps: float = 1e-5,
        momentum: float = 0.1,
    ) -> None:
        super().__init__(
            nn.ConvTranspose2d(in_channels, out_channels, kernel_size, stride, padding, bias=bias),
            nn.BatchNorm2d(out_channels, eps=eps, momentum=momentum),
            nn.ReLU(inplace=True),
        )

    @property
    def conv(self) -> nn.ConvTranspose2d:
        return self[0]

    @property
    def bn(self) -> nn.BatchNorm2d:
        return self[1]
