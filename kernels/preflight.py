"""`--kernels triton` kept as a promise: every fused op's Triton kernels run once before the
first training step, so a card or a compiler that cannot run them fails there, in one line.

It sits above the ops and the dispatch rule, which it calls; nothing below imports it.
"""

from __future__ import annotations

import torch

from gentool.errors import GentoolError
from gentool.kernels.convt_bn_relu import probe_convt_bn_relu
from gentool.kernels.dispatch import (
    KernelUnavailable,
    check_requested_backend,
    one_line,
    requested_backend,
)
from gentool.kernels.reparam_kl import probe_reparameterize_kl


def preflight(device: torch.device, dtype: torch.dtype = torch.float32) -> None:
    """Under ``--kernels triton``, prove before any training step that every fused op's Triton
    kernels compile and launch on `device`; a KernelUnavailable names the op that cannot.

    The contract, for a trainer to call once where it would call `check_requested_backend`:

    - under ``triton``: `check_requested_backend(device)`, then each fused op runs its Triton
      path once on small `dtype` inputs on `device`, training forward and backward and the eval
      forward, so each kernel that training runs is compiled (the first time in this process, or
      read from Triton's cache) and launched. Any failure raises KernelUnavailable in one line:
      the op, the reason, and ``--kernels auto or torch``. Nothing else changes: parameters,
      running statistics and random generators are the probe's own;
    - under ``auto`` and ``torch``: nothing (``auto`` falls back per op at its first failure,
      see `run_with_fallback`; ``torch`` runs no Triton kernel).
    """
    if requested_backend() != "triton":
        return
    check_requested_backend(device)
    for op, probe in [
        ("reparameterize_kl", probe_reparameterize_kl),
        ("convt_bn_relu", probe_convt_bn_relu),
    ]:
        try:
            probe(device, dtype)
        except (torch.OutOfMemoryError, GentoolError):
            raise
        except Exception as error:
            raise KernelUnavailable(
                f"--kernels triton: {op} cannot run its Triton kernels on {device} "
                f"({one_line(error)}); use --kernels auto or torch"
            ) from error
