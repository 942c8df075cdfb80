"""`gentool bench`: each fused op checked against a float64 reference, then timed, per backend.

For every op, size and backend the result's correctness comes first: a backend whose outputs or
gradients disagree with the reference is marked failed, whatever its speed. Timing runs the
forward and backward pass as training does. Achieved bandwidth is set against a ceiling measured
in the same run (a large on-device copy), not a datasheet.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from gentool.kernels import convt_bn_relu, reparameterize_kl_reference
from gentool.kernels.dispatch import choose_backend, use_backend
from gentool.kernels.reparam_kl import reparameterize_kl

Tensors = tuple[torch.Tensor, ...]
TIMING_BUDGET_SECONDS = 0.5  # per case, after warm-up; at least MIN_REPEATS runs
MIN_REPEATS = 5
WARMUP = 3


@dataclass(frozen=True)
class Tolerance:
    atol: float
    rtol: float


TOLERANCES = {
    torch.float32: Tolerance(atol=1e-4, rtol=1e-4),
    torch.bfloat16: Tolerance(atol=3e-2, rtol=3e-2),
}


@dataclass(frozen=True)
class Op:
    """A fused op to benchmark: how to make its inputs, run it, and check it."""

    name: str
    sizes: Mapping[str, list[tuple[int, ...]]]
    make_inputs: Callable[[tuple[int, ...], torch.dtype, torch.device], Tensors]
    # (inputs, noise) -> outputs; noise fixed for the correctness check, None when timing.
    backends: Mapping[str, Callable[[Tensors, torch.Tensor | None], Tensors]]
    reference: Callable[[Tensors, torch.Tensor | None], Tensors]  # float64 outputs
    noise: Callable[[Tensors], torch.Tensor | None]  # None for ops that draw no noise
    bytes_moved: Callable[[tuple[int, ...], torch.dtype], int]  # forward + backward traffic
    flops: Callable[[tuple[int, ...]], int] | None = None  # forward + backward, where it matters
    triton_backends: tuple[str, ...] = ("triton",)  # those that run Triton kernels


@dataclass
class Result:
    op: str
    backend: str
    shape: tuple[int, ...]
    dtype: str
    status: str  # "ok", "failed" (wrong results) or "skipped"
    reason: str = ""
    max_error: float | None = None
    median_ms: float | None = None
    gbps: float | None = None
    tflops: float | None = None
    ceiling_percent: float | None = None
    speedup: float | None = None
    peak_mb: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


# --- reparameterize_kl ----------------------------------------------------------------------------


def _reparam_inputs(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> Tensors:
    generator = torch.Generator().manual_seed(0)
    mu = torch.randn(shape, generator=generator).to(device, dtype).requires_grad_(True)
    logvar = (torch.randn(shape, generator=generator) * 0.5).to(device, dtype).requires_grad_(True)
    return mu, logvar


def _reparam_eager(inputs: Tensors, eps: torch.Tensor | None) -> Tensors:
    """The unfused composition a VAE writes by hand."""
    mu, logvar = inputs
    std = torch.exp(0.5 * logvar)
    eps = torch.randn_like(std) if eps is None else eps
    z = mu + eps * std
    kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=1)
    return z, kl


_reparam_compiled = torch.compile(_reparam_eager, dynamic=False)


def _on_backend(backend: str) -> Callable[[Tensors, torch.Tensor | None], Tensors]:
    def run(inputs: Tensors, eps: torch.Tensor | None) -> Tensors:
        with use_backend(backend):
            return reparameterize_kl(*inputs, eps=eps)

    return run


def _reparam_reference(inputs: Tensors, eps: torch.Tensor) -> Tensors:
    mu, logvar = (tensor.detach().double().requires_grad_(True) for tensor in inputs)
    z, kl = reparameterize_kl_reference(mu, logvar, eps=eps.double())
    return z, kl, mu, logvar


REPARAM_KL = Op(
    name="reparam_kl",
    sizes={
        "small": [(64, 32)],
        "dcgan": [(128, 128), (256, 512)],  # VAE latents: batch × latent size
        "large": [(4096, 4096)],  # 16M elements: bandwidth-bound
    },
    make_inputs=_reparam_inputs,
    backends={
        "eager": _reparam_eager,
        "compile": _reparam_compiled,
        "torch": _on_backend("torch"),
        "triton": _on_backend("triton"),
    },
    reference=_reparam_reference,
    noise=lambda inputs: torch.randn(
        inputs[0].shape, generator=torch.Generator().manual_seed(1)
    ).to(inputs[0].device, inputs[0].dtype),
    # forward: μ, log σ² in, z out; backward: μ, log σ², dz in, dμ, dlog σ² out
    bytes_moved=lambda shape, dtype: 8 * math.prod(shape) * torch.finfo(dtype).bits // 8,
)


# --- ConvTransposeBNReLU --------------------------------------------------------------------------
# Shapes are (batch, in channels, out channels, input side) of DCGAN's generator blocks: a 1×1
# input is the projection of z (kernel 4, stride 1), larger ones double (kernel 4, stride 2, pad 1).


def _convt_geometry(x: torch.Tensor) -> tuple[int, int]:
    return (1, 0) if x.shape[-1] == 1 else (2, 1)


def _convt_inputs(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> Tensors:
    batch, in_channels, out_channels, side = shape
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch, in_channels, side, side, generator=generator)
    weight = torch.randn(in_channels, out_channels, 4, 4, generator=generator) * 0.02
    gamma = 1 + 0.02 * torch.randn(out_channels, generator=generator)
    beta = 0.02 * torch.randn(out_channels, generator=generator)
    return (
        x.to(device, dtype).requires_grad_(True),
        *(tensor.to(device).requires_grad_(True) for tensor in (weight, gamma, beta)),
    )


def _running_statistics(gamma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Fresh running mean and variance, which a training step updates as the layers do."""
    return torch.zeros_like(gamma), torch.ones_like(gamma)


def _convt_eager(inputs: Tensors, noise: torch.Tensor | None = None) -> Tensors:
    """The three layers as a model writes them in training: batch statistics normalise, the
    running ones are updated."""
    x, weight, gamma, beta = inputs
    stride, padding = _convt_geometry(x)
    y = F.conv_transpose2d(x, weight.to(x.dtype), None, stride, padding)
    running_mean, running_var = _running_statistics(gamma)
    y = F.batch_norm(y, running_mean, running_var, gamma, beta, training=True)
    return (F.relu(y),)


_convt_compiled = torch.compile(_convt_eager, dynamic=False)


def _convt_on_backend(
    backend: str, convolution: str = "vendor"
) -> Callable[[Tensors, torch.Tensor | None], Tensors]:
    def run(inputs: Tensors, noise: torch.Tensor | None) -> Tensors:
        x, weight, gamma, beta = inputs
        stride, padding = _convt_geometry(x)
        running_mean, running_var = _running_statistics(gamma)
        with use_backend(backend):
            out = convt_bn_relu(
                x, weight, None, gamma, beta, running_mean, running_var, training=True,
                momentum=0.1, eps=1e-5, stride=stride, padding=padding, convolution=convolution,
            )  # fmt: skip
        return (out,)

    return run


def _convt_reference(inputs: Tensors, noise: torch.Tensor | None) -> Tensors:
    leaves = tuple(tensor.detach().double().requires_grad_(True) for tensor in inputs)
    return (*_convt_eager(leaves), *leaves)


def _convt_bytes(shape: tuple[int, ...], dtype: torch.dtype) -> int:
    """The fused op's activation traffic: forward x in, y out and in, output out; backward the
    output gradient and y read twice, dy written, then read with x by the convolution's own
    backward, which writes dx."""
    batch, in_channels, out_channels, side = shape
    stride, padding = (1, 0) if side == 1 else (2, 1)
    out_side = (side - 1) * stride - 2 * padding + 4
    inputs, outputs = batch * in_channels * side**2, batch * out_channels * out_side**2
    return (3 * inputs + 10 * outputs) * torch.finfo(dtype).bits // 8


def _convt_flops(shape: tuple[int, ...]) -> int:
    """The convolution's multiply-adds, forward and the two backward GEMMs (dx and dw)."""
    batch, in_channels, out_channels, side = shape
    return 3 * 2 * batch * in_channels * side**2 * out_channels * 4**2


CONVT_BN_RELU = Op(
    name="convt_bn_relu",
    sizes={
        "small": [(4, 16, 8, 4)],
        "dcgan": [(128, 100, 512, 1), (128, 512, 256, 4), (128, 256, 128, 8), (128, 128, 64, 16)],
        "large": [(512, 256, 128, 8), (512, 128, 64, 16)],
    },
    make_inputs=_convt_inputs,
    backends={
        "eager": _convt_eager,
        "compile": _convt_compiled,
        "torch": _convt_on_backend("torch"),
        "triton": _convt_on_backend("triton"),  # cuDNN's convolution, Triton's BatchNorm + ReLU
        "triton-gemm": _convt_on_backend("triton", "gemm"),  # all of it in Triton
    },
    reference=_convt_reference,
    noise=lambda inputs: None,
    bytes_moved=_convt_bytes,
    flops=_convt_flops,
    triton_backends=("triton", "triton-gemm"),
)

OPS: dict[str, Op] = {op.name: op for op in (REPARAM_KL, CONVT_BN_RELU)}


# --- running ------------------------------------------------------------------------------------


def device_copy_ceiling(device: torch.device) -> float:
    """The device's achievable memory bandwidth in GB/s: a large copy, read plus write."""
    count = (256 if device.type == "cuda" else 64) * 2**20 // 4
    source = torch.empty(count, dtype=torch.float32, device=device).uniform_()
    target = torch.empty_like(source)
    seconds = _median_seconds(lambda: target.copy_(source), device)
    return 2 * source.numel() * source.element_size() / seconds / 1e9


def run_op(
    op: Op,
    *,
    sizes: str,
    backends: list[str],
    dtype: torch.dtype,
    device: torch.device,
    ceiling_gbps: float,
    on_result: Callable[[Result], None] = lambda result: None,
) -> list[Result]:
    """Check, then time, every (shape, backend) of `op`."""
    results = []
    for shape in op.sizes[sizes]:
        eager_ms = None
        for backend in (backend for backend in backends if backend in op.backends):
            result = _run_case(op, backend, shape, dtype, device, ceiling_gbps)
            if backend == "eager":
                eager_ms = result.median_ms
            if eager_ms and result.median_ms:
                result.speedup = eager_ms / result.median_ms
            results.append(result)
            on_result(result)
    return results


def cases(op: Op, sizes: str, backends: list[str]) -> int:
    return len(op.sizes[sizes]) * len([backend for backend in backends if backend in op.backends])


def _run_case(
    op: Op,
    backend: str,
    shape: tuple[int, ...],
    dtype: torch.dtype,
    device: torch.device,
    ceiling_gbps: float,
) -> Result:
    result = Result(op.name, backend, shape, str(dtype).removeprefix("torch."), "ok")
    reason = _why_backend_cannot_run(op, backend, dtype, device)
    if reason:
        result.status, result.reason = "skipped", reason
        return result
    function = op.backends[backend]
    inputs = op.make_inputs(shape, dtype, device)
    try:
        with _exact_float32():
            result.max_error = _check(op, function, inputs, dtype)
    except _Mismatch as mismatch:
        result.status, result.reason, result.max_error = "failed", str(mismatch), mismatch.error
        return result
    except Exception as error:  # a backend that crashes (a compile failure, say) is skipped
        result.status, result.reason = "skipped", f"{type(error).__name__}: {error}"[:200]
        return result
    gradients = tuple(torch.randn_like(output) for output in function(inputs, None))

    def step() -> None:
        outputs = function(inputs, None)
        torch.autograd.backward(outputs, gradients)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seconds = _median_seconds(step, device)
    result.median_ms = seconds * 1e3
    result.gbps = op.bytes_moved(shape, dtype) / seconds / 1e9
    result.ceiling_percent = 100 * result.gbps / ceiling_gbps
    if op.flops is not None:
        result.tflops = op.flops(shape) / seconds / 1e12
    if device.type == "cuda":
        result.peak_mb = torch.cuda.max_memory_allocated(device) / 2**20
    return result


@contextmanager
def _exact_float32() -> Iterator[None]:
    """TF32 off while checking: it rounds float32 products to 10 mantissa bits, by design."""
    previous = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = previous


class _Mismatch(Exception):
    def __init__(self, message: str, error: float) -> None:
        super().__init__(message)
        self.error = error


def _check(op: Op, function: Callable, inputs: Tensors, dtype: torch.dtype) -> float:
    """Largest error against the float64 reference, outputs and gradients; _Mismatch if too big."""
    noise = op.noise(inputs)
    outputs = function(inputs, noise)
    reference = op.reference(inputs, noise)
    reference_outputs, reference_inputs = reference[: len(outputs)], reference[len(outputs) :]
    gradients = [
        torch.randn(
            output.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(index)
        )
        for index, output in enumerate(outputs)
    ]
    actual_grads = torch.autograd.grad(
        outputs,
        inputs,
        [
            gradient.to(output.device, output.dtype)
            for gradient, output in zip(gradients, outputs, strict=True)
        ],
    )
    expected_grads = torch.autograd.grad(
        reference_outputs,
        reference_inputs,
        [
            gradient.to(output.device)
            for gradient, output in zip(gradients, reference_outputs, strict=True)
        ],
    )
    tolerance = TOLERANCES[dtype]
    worst = 0.0
    pairs = [
        *zip(outputs, reference_outputs, strict=True),
        *zip(actual_grads, expected_grads, strict=True),
    ]
    names = [f"output {index}" for index in range(len(outputs))] + [
        f"gradient {index}" for index in range(len(actual_grads))
    ]
    for name, (actual, expected) in zip(names, pairs, strict=True):
        difference = (actual.double() - expected).abs()
        allowed = tolerance.atol + tolerance.rtol * expected.abs()
        worst = max(worst, difference.max().item())
        if (difference > allowed).any():
            raise _Mismatch(
                f"{name} differs from the float64 reference by up to {difference.max().item():.3g}",
                difference.max().item(),
            )
    return worst


def _why_backend_cannot_run(
    op: Op, backend: str, dtype: torch.dtype, device: torch.device
) -> str | None:
    if backend in op.triton_backends:
        if device.type != "cuda":
            return "Triton kernels need a CUDA device"
        try:
            with use_backend("triton"):
                choose_backend(op.name, torch.empty(0, device=device, dtype=dtype))
        except Exception as error:
            return str(error)
    if dtype == torch.bfloat16 and device.type == "cpu" and backend == "compile":
        return "bfloat16 compile is not measured on the CPU"
    return None


def _median_seconds(function: Callable[[], Any], device: torch.device) -> float:
    """Median wall time of `function` after warm-up, synchronising the device around each run."""
    for _ in range(WARMUP):
        function()
    _synchronize(device)
    times = []
    started = time.perf_counter()
    while len(times) < MIN_REPEATS or time.perf_counter() - started < TIMING_BUDGET_SECONDS:
        if device.type == "cuda":
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            begin.record()
            function()
            end.record()
            end.synchronize()
            times.append(begin.elapsed_time(end) / 1e3)
        else:
            begin_time = time.perf_counter()
            function()
            times.append(time.perf_counter() - begin_time)
        if len(times) >= 1000:
            break
    return statistics.median(times)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def results_to_json(results: list[Result], *, device: str, ceiling_gbps: float) -> dict[str, Any]:
    return {
        "device": device,
        "torch": torch.__version__,
        "ceiling_gbps": ceiling_gbps,
        "results": [asdict(result) for result in results],
    }
