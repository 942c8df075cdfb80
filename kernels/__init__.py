"""Fused operations for gentool's models.

Each op has a PyTorch implementation, which is also the reference its kernels are tested against,
and a Triton implementation picked by the rule in `dispatch.py`. Triton is imported only when a
Triton kernel runs (the `triton_*` modules), so gentool works where Triton is not installed.
"""

from gentool.kernels.convt_bn_relu import (
    ConvTransposeBNReLU,
    convt_bn_relu,
    fused_blocks_running_plain,
)
from gentool.kernels.reparam_kl import reparameterize_kl, reparameterize_kl_reference

__all__ = [
    "ConvTransposeBNReLU",
    "convt_bn_relu",
    "fused_blocks_running_plain",
    "reparameterize_kl",
    "reparameterize_kl_reference",
]
