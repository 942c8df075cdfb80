"""pytest-benchmark suite for reparameterize_kl, forward + backward.

    pytest benches/test_reparam_kl.py                       # every size and backend that runs here
    pytest benches/test_reparam_kl.py --benchmark-json out.json

Peers: the unfused composition a VAE would write by hand (eager), the same under torch.compile,
the op's PyTorch fallback, and the op on its Triton backend (GPU only). Each case records its
achieved bandwidth: the fused op's forward moves 3 tensors (μ and log σ² in, z out), its backward 5.
"""

from __future__ import annotations

import pytest
import torch

from gentool.kernels import reparameterize_kl
from gentool.kernels.dispatch import use_backend

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
# (batch, latent): VAE latent sizes, then 16M elements.
SIZES = {"vae-128x128": (128, 128), "vae-256x512": (256, 512), "16M": (4096, 4096)}
BYTES_PER_ELEMENT_MOVED = 3 + 5  # forward + backward tensors of the fused op


def unfused(mu: torch.Tensor, logvar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    std = torch.exp(0.5 * logvar)
    eps = torch.randn_like(std)
    z = mu + eps * std
    kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=1)
    return z, kl


def on_backend(backend: str):
    """reparameterize_kl pinned to one backend, whatever GENTOOL_KERNELS says."""

    def run(mu: torch.Tensor, logvar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with use_backend(backend):
            return reparameterize_kl(mu, logvar)

    return run


def backends() -> list:
    cases = [
        pytest.param(unfused, id="eager"),
        pytest.param(torch.compile(unfused), id="compile"),
        pytest.param(on_backend("torch"), id="fallback"),
    ]
    cases.append(
        pytest.param(
            on_backend("triton"),
            id="triton",
            marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="Triton needs a GPU"),
        )
    )
    return cases


@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("function", backends())
def test_forward_backward(benchmark, function, size, dtype):
    if DEVICE.type == "cpu" and dtype == torch.bfloat16:
        pytest.skip("bf16 is measured on the GPU only")
    rows, cols = SIZES[size]
    mu = torch.randn(rows, cols, device=DEVICE, dtype=dtype, requires_grad=True)
    logvar = torch.randn(rows, cols, device=DEVICE, dtype=dtype, requires_grad=True)
    grad_z = torch.randn_like(mu)
    grad_kl = torch.randn(rows, device=DEVICE)

    def step() -> None:
        z, kl = function(mu, logvar)
        torch.autograd.backward((z, kl), (grad_z, grad_kl.to(kl.dtype)))
        if DEVICE.type == "cuda":
            torch.cuda.synchronize()

    step()  # warm-up: compilation, autotuning, allocator
    benchmark.pedantic(step, rounds=20, warmup_rounds=2)
    seconds = benchmark.stats.stats.median
    moved = rows * cols * mu.element_size() * BYTES_PER_ELEMENT_MOVED
    benchmark.extra_info["GB/s"] = round(moved / seconds / 1e9, 1)
    benchmark.extra_info["device"] = (
        torch.cuda.get_device_name() if DEVICE.type == "cuda" else "cpu"
    )
