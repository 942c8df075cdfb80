"""The one rule that picks a backend for each fused op call.

``GENTOOL_KERNELS`` (or `gentool train --kernels`, which sets it) is one of:

- ``auto`` (the default): Triton for CUDA tensors when Triton imports, else PyTorch;
- ``triton``: always Triton, and a clear error where it cannot run (no silent fallback);
- ``torch``: always the PyTorch implementation, which is also the reference.

Triton also runs on CPU tensors under its interpreter (``TRITON_INTERPRET=1``), which is how the
kernels are tested on machines without a GPU; ``auto`` never picks the interpreter, which is slow.
"""

from __future__ import annotations

import functools
import os
from typing import Literal

import torch

from gentool.errors import GentoolError

Backend = Literal["triton", "torch"]
BACKEND_ENV = "GENTOOL_KERNELS"
BACKEND_CHOICES = ("auto", "triton", "torch")
TRITON_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


class KernelUnavailable(GentoolError):
    """The Triton backend was asked for where it cannot run."""


def requested_backend() -> str:
    """The backend the user asked for, validated."""
    requested = os.environ.get(BACKEND_ENV, "auto").strip().lower() or "auto"
    if requested not in BACKEND_CHOICES:
        raise GentoolError(
            f"{BACKEND_ENV}={requested!r} is not a kernel backend; use one of "
            f"{', '.join(BACKEND_CHOICES)}"
        )
    return requested


def choose_backend(op: str, tensor: torch.Tensor) -> Backend:
    """The backend that runs `op` on `tensor` under the current rule."""
    requested = requested_backend()
    if requested == "torch":
        return "torch"
    reason = _why_triton_cannot_run(tensor)
    if requested == "triton":
        if reason:
            raise KernelUnavailable(
                f"{op}: the Triton backend cannot run here ({reason}); use --kernels auto or torch"
            )
        return "triton"
    return "triton" if tensor.is_cuda and not reason else "torch"


def check_requested_backend(device: torch.device) -> None:
    """Fail before any work when the Triton backend is asked for and cannot run on `device`."""
    if requested_backend() == "triton":
        reason = _why_triton_cannot_run(torch.empty(0, device=device))
        if reason:
            raise KernelUnavailable(
                f"--kernels triton cannot run here ({reason}); use --kernels auto or torch"
            )


def interpreter_enabled() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


@functools.cache
def triton_import_error() -> str | None:
    """Why Triton cannot be imported, or None when it can."""
    try:
        import triton  # noqa: F401
    except ImportError as error:
        return f"Triton is not installed ({error})"
    return None


def _why_triton_cannot_run(tensor: torch.Tensor) -> str | None:
    if (error := triton_import_error()) is not None:
        return error
    if not tensor.is_cuda and not interpreter_enabled():
        return f"the tensor is on {tensor.device.type}, and Triton needs a CUDA device"
    if tensor.dtype not in TRITON_DTYPES:
        return f"{tensor.dtype} is not supported by the kernel (float32, float16, bfloat16 are)"
    return None
