"""The one rule that picks a backend for each fused op call.

The backend asked for is one of:

- ``auto`` (the default): for CUDA tensors, where Triton imports, the backend `AUTO_ON_CUDA`
  names for the op; PyTorch elsewhere. A Triton kernel that fails to compile or launch under
  ``auto`` is said once, in one line, and the op continues on PyTorch (`run_with_fallback`);
- ``triton``: always Triton, and a clear error where it cannot run (no silent fallback);
  `gentool.kernels.preflight` raises it before any training step;
- ``torch``: always the PyTorch implementation, which is also the reference.

On the Triton backend, ConvTransposeBNReLU runs cuDNN's convolution followed by Triton's fused
BatchNorm + ReLU, whether ``auto`` or ``triton`` chose it; its all-Triton implicit GEMM runs only
where asked for by name (``convolution="gemm"``). A fused block whose layers were replaced, or
that runs under torch.compile, runs as its plain layers whatever the backend;
`convt_bn_relu.fused_blocks_running_plain` names such blocks, for a trainer to refuse
``triton`` with them.

It is an explicit value, entered once for a block of work with `use_backend` (the trainer does so
with its acceleration settings' `kernels`, `gentool bench` once per backend it times). Outside
such a block, ``GENTOOL_KERNELS`` is the default, and otherwise ``auto``.

Triton also runs on CPU tensors under its interpreter (``TRITON_INTERPRET=1``), which is how the
kernels are tested on machines without a GPU; ``auto`` never picks the interpreter, which is slow.
"""

from __future__ import annotations

import functools
import os
import re
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Literal, TypeVar

import torch

from gentool.errors import GentoolError
from gentool.kernels.launches import interpreter_enabled, recording

Backend = Literal["triton", "torch"]
# ConvTransposeBNReLU's convolution on the Triton backend: PyTorch's (cuDNN) or Triton's GEMM.
Convolution = Literal["vendor", "gemm"]
BACKEND_ENV = "GENTOOL_KERNELS"
BACKEND_CHOICES = ("auto", "triton", "torch")
TRITON_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
Result = TypeVar("Result")

AUTO_ON_CUDA: dict[str, Backend] = {
    # One pass that draws ε in the kernel and regenerates it in the backward pass: 3 tensors of
    # traffic forward and 5 backward, where the unfused ops move about twice that in 8 launches.
    "reparameterize_kl": "triton",
    # Triton with the vendor's convolution: cuDNN's transposed convolution, then Triton's fused
    # statistics, normalisation and ReLU (and their backward), which spare the BatchNorm's
    # output and two passes over it. The implicit-GEMM convolution is never picked: whether it
    # beats cuDNN is for a GPU measurement to say (docs/benchmarks.md).
    "convt_bn_relu": "triton",
}

_chosen: ContextVar[str | None] = ContextVar("gentool_kernel_backend", default=None)


class KernelUnavailable(GentoolError):
    """The Triton backend was asked for where it cannot run."""


class KernelFallbackWarning(UserWarning):
    """Under ``auto``, an op's Triton kernels failed and it continues on PyTorch."""


_fallen_back: dict[str, str] = {}  # op → why its Triton kernels failed, under auto


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
    if reason or not _on_gpu(tensor) or op in _fallen_back:
        return "torch"
    return AUTO_ON_CUDA.get(op, "torch")


def run_with_fallback(
    op: str,
    triton_path: Callable[[], Result],
    torch_path: Callable[[], Result],
    *,
    requested: str | None = None,
) -> Result:
    """`triton_path()`; under ``auto``, if it fails, `torch_path()` instead, then and for the rest
    of the process, after one warning line that names the op, the reason and ``--kernels torch``.

    Under ``triton`` a failure propagates: `gentool.kernels.preflight` is where that choice fails
    early. Input errors belong before the call (they would fail PyTorch too), and running out of
    device memory is not a kernel's failure, so both propagate under any backend. A backward pass
    gives the `requested` backend of its forward pass: autograd runs it in a thread of its own,
    which does not see the forward's `use_backend`.
    """
    if (requested or requested_backend()) != "auto":
        return triton_path()
    if op in _fallen_back:
        return torch_path()
    try:
        return triton_path()
    except (torch.OutOfMemoryError, GentoolError):
        raise
    except Exception as error:
        reason = one_line(error)
        _fallen_back[op] = reason
        warnings.warn(
            f"{op}: the Triton kernels failed ({reason}); running PyTorch's implementation "
            "instead (--kernels torch skips them)",
            KernelFallbackWarning,
            stacklevel=2,
        )
        return torch_path()


def check_requested_backend(device: torch.device) -> None:
    """Fail before any work when the Triton backend is asked for and cannot run on `device`."""
    if requested_backend() == "triton":
        reason = _why_triton_cannot_run(torch.empty(0, device=device))
        if reason:
            raise KernelUnavailable(
                f"--kernels triton cannot run here ({reason}); use --kernels auto or torch"
            )


def _on_gpu(tensor: torch.Tensor) -> bool:
    """Where `auto` may pick Triton: a CUDA device (never Triton's slow interpreter)."""
    return tensor.is_cuda


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
    if not tensor.is_cuda and not interpreter_enabled() and not recording():
        return f"the tensor is on {tensor.device.type}, and Triton needs a CUDA device"
    if tensor.dtype not in TRITON_DTYPES:
        return f"{tensor.dtype} is not supported by the kernel (float32, float16, bfloat16 are)"
    return None


def one_line(error: BaseException, limit: int = 200) -> str:
    """The error's type and the line of its message that says what went wrong: the first, or for
    Triton's compilation errors (the source location, the source, then the error) the last."""
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    if len(lines) > 1 and re.fullmatch(r"at \d+:\d+:", lines[0].strip()):
        lines = lines[-1:]
    text = f"{type(error).__name__}: {lines[0].strip()}" if lines else type(error).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"
