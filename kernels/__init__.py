"""Fused operations for gentool's models, each with a PyTorch implementation that is the reference.

Importing this package does not import Triton; only the kernel files do, when a kernel is used.
"""

from gentool.kernels.convt_bn_relu import ConvTransposeBNReLU

__all__ = ["ConvTransposeBNReLU"]
