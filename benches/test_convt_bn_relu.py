"""pytest-benchmark suite for ConvTransposeBNReLU at DCGAN's generator shapes (batch 128, 64×64).

    pytest benches/test_convt_bn_relu.py                              # everything that runs here
    pytest benches/test_convt_bn_relu.py -k "16x16 and train-step"    # one block, one mode
    pytest benches/test_convt_bn_relu.py --benchmark-json out.json

Peers: the unfused layers (eager, cuDNN on a GPU), the same under torch.compile (which cannot fuse
a transposed convolution with BatchNorm, so it is the peer to beat), and two Triton backends (GPU
only): `triton`, cuDNN's convolution followed by Triton's fused BatchNorm + ReLU (what `auto`
runs), and `triton-gemm`, the convolution too in Triton. Modes: the training forward, a training
step (forward + backward) and the eval forward; `conv-only` times the transposed convolution
alone, the Triton GEMM against cuDNN. Each case records its peak memory on the GPU. float32 runs
with TF32 as PyTorch's default convolutions do.
"""

from __future__ import annotations

import contextlib
import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gentool.kernels import ConvTransposeBNReLU
from gentool.kernels.dispatch import use_backend

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
BATCH = int(os.environ.get("GENTOOL_BENCH_BATCH", "128"))
# DCGAN's generator at 64×64: (in channels, out channels, input side); z is projected to 4×4 by
# a kernel-4 stride-1 block, then each kernel-4 stride-2 padding-1 block doubles the side.
BLOCKS = {
    "4x4": (100, 512, 1),
    "8x8": (512, 256, 4),
    "16x16": (256, 128, 8),
    "32x32": (128, 64, 16),
}
MODES = ["train-forward", "train-step", "eval-forward", "conv-only"]


def make_block(name: str, backend: str) -> nn.Module:
    in_channels, out_channels, side = BLOCKS[name]
    stride, padding = (1, 0) if side == 1 else (2, 1)
    torch.manual_seed(0)
    convolution = "gemm" if backend == "triton-gemm" else "vendor"
    fused = ConvTransposeBNReLU(
        in_channels, out_channels, 4, stride, padding, convolution=convolution
    ).to(DEVICE)
    if backend.startswith("triton"):
        return fused
    plain = nn.Sequential(
        nn.ConvTranspose2d(in_channels, out_channels, 4, stride, padding, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ).to(DEVICE)
    plain.load_state_dict(fused.state_dict())
    return torch.compile(plain, dynamic=False) if backend == "compile" else plain


def backends() -> list:
    no_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="Triton needs a GPU")
    return [
        pytest.param("eager", id="eager"),
        pytest.param("compile", id="compile"),
        pytest.param("triton", id="triton", marks=no_gpu),
        pytest.param("triton-gemm", id="triton-gemm", marks=no_gpu),
    ]


def synchronize() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


@pytest.fixture
def kernel_backend():
    """Runs the rest of the test on the block's kernel backend."""
    with contextlib.ExitStack() as stack:
        yield lambda backend: stack.enter_context(
            use_backend("triton" if backend.startswith("triton") else "torch")
        )


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("block_name", list(BLOCKS))
@pytest.mark.parametrize("backend", backends())
def test_block(benchmark, kernel_backend, backend, block_name, mode):
    kernel_backend(backend)
    block = make_block(block_name, backend)
    in_channels, _, side = BLOCKS[block_name]
    x = torch.randn(BATCH, in_channels, side, side, device=DEVICE)
    if mode == "conv-only":
        if backend in ("compile", "triton"):
            pytest.skip("conv-only compares the Triton GEMM with cuDNN")
        run = conv_only(block[0], x, gemm=backend == "triton-gemm")
    elif mode == "train-step":
        x.requires_grad_(True)
        block.train()
        grad = torch.randn_like(block(x))

        def run() -> None:
            block(x).backward(grad)

    else:
        block.train(mode == "train-forward")

        @torch.no_grad()
        def run() -> None:
            block(x)

    def step() -> None:
        run()
        synchronize()

    step()  # warm-up: compilation, autotuning, allocator
    if DEVICE.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    benchmark.pedantic(step, rounds=20 if DEVICE.type == "cuda" else 3, warmup_rounds=2)
    benchmark.extra_info["device"] = (
        torch.cuda.get_device_name() if DEVICE.type == "cuda" else "cpu"
    )
    benchmark.extra_info["batch"] = BATCH
    if DEVICE.type == "cuda":
        benchmark.extra_info["peak MB"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)


def conv_only(conv: nn.ConvTranspose2d, x: torch.Tensor, *, gemm: bool):
    weight = conv.weight.detach()
    stride, padding = conv.stride[0], conv.padding[0]
    if gemm:
        from gentool.kernels import triton_convt_gemm

        return lambda: triton_convt_gemm.conv_transpose(x, weight, stride, padding)
    return lambda: F.conv_transpose2d(x, weight, None, stride, padding)
