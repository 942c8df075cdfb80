"""The one rule that picks a backend for each fused op call.

The backend asked for is one of:

- ``auto`` (the default): Triton for CUDA tensors when Triton imports, else PyTorch;
- ``triton``: always Triton, and a clear error where it cannot run (no silent fallback);
- ``torch``: always the PyTorch implementation, which is also the reference.

It is an explicit value, entered once for a block of work with `use_backend` (the trainer does so
with its acceleration settings' `kernels`, `gentool bench` once per backend it times). Outside
such a block, ``GENTOOL_KERNELS`` is the default, and otherwise ``auto``.

Triton also runs on CPU tensors under its interpreter (``TRITON_INTERPRET=1``), which is how the
kernels are tested on machines without a GPU; ``auto`` never picks the interpreter, which is slow.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Literal

import torch

from gentool.errors import GentoolError

Backend = Literal["triton", "torch"]
BACKEND_ENV = "GENTOOL_KERNELS"
BACKEND_CHOICES = ("auto", "triton", "torch")
TRITON_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

_chosen: ContextVar[str | None] = ContextVar("gentool_kernel_backend", default=None)


class KernelUnavailable(GentoolError):
    """The Triton backend was asked for where it cannot run."""


def check_backend_name(name: str, *, given_as: str = "--kernels ") -> str:
    """`name` as a backend choice; a GentoolError says where it came from (`given_as`, the text
    before the value) and the choices if it is not one."""
    chosen = name.strip().lower()
    if chosen not in BACKEND_CHOICES:
        raise GentoolError(
            f"{given_as}{name!r} is not a kernel backend; use one of {', '.join(BACKEND_CHOICES)}"
        )
    return chosen


@contextmanager
def use_backend(name: str) -> Iterator[str]:
    """Run the block's fused ops on backend `name` (checked once, here)."""
    token = _chosen.set(check_backend_name(name))
    try:
        yield _chosen.get()
    finally:
        _chosen.reset(token)


def requested_backend() -> str:
    """The backend asked for: the enclosing `use_backend`'s, else the environment's default."""
    chosen = _chosen.get()
    return chosen if chosen is not None else _environment_default(os.environ.get(BACKEND_ENV))


@functools.lru_cache(maxsize=8)
def _environment_default(value: str | None) -> str:
    if value is None or not value.strip():
        return "auto"
    return check_backend_name(value, given_as=f"{BACKEND_ENV}=")


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
