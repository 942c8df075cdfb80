"""The BatchNorm + ReLU kernels on a tensor large enough to spread each channel over many programs.

The block tests (test_convt_bn_relu.py) keep their shapes small for the interpreter; here one
tensor of 330k elements makes the statistics and the backward pass split each channel into more
shares than the backward pass adds at once, in both layouts. Tolerances as there: float32
against float64, 1e-5 + 1e-4 relative for outputs and statistics, 1e-4 + 1e-4 for gradients.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from gentool.kernels import triton_batch_norm, triton_batch_norm_backward

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
SHAPE = (10, 8, 64, 64)  # (N, C, H, W): 40 shares of 8192 elements in either layout
EPS = 1e-5
MOMENTUM = 0.1


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last], ids=str)
def test_statistics_normalisation_and_backward_over_many_shares(memory_format):
    generator = torch.Generator().manual_seed(0)
    y = (torch.randn(SHAPE, generator=generator) * 3 + 5).to(DEVICE, memory_format=memory_format)
    channels = SHAPE[1]
    gamma = torch.linspace(0.5, 1.5, channels, device=DEVICE)
    beta = torch.linspace(-0.5, 0.5, channels, device=DEVICE)
    running_mean = torch.zeros(channels, device=DEVICE)
    running_var = torch.ones(channels, device=DEVICE)
    grad_out = torch.randn(SHAPE, generator=generator).to(DEVICE)

    partials = triton_batch_norm.statistics(y)
    assert partials[0].shape[0] > triton_batch_norm_backward.SHARE_STEP
    out = torch.empty_like(y)
    statistics = triton_batch_norm.normalize_training(
        y, partials, gamma, beta, running_mean, running_var, MOMENTUM, EPS, out
    )
    grad_y, grad_gamma, grad_beta = triton_batch_norm_backward.backward(
        grad_out, y, gamma, statistics.mean, statistics.invstd, statistics.scale, statistics.shift
    )

    leaves = [tensor.double().requires_grad_(True) for tensor in (y, gamma, beta)]
    expected_running = [torch.zeros(channels).double(), torch.ones(channels).double()]
    expected = F.relu(
        F.batch_norm(leaves[0], *expected_running, leaves[1], leaves[2], True, MOMENTUM, EPS)
    )
    expected_grads = torch.autograd.grad(expected, leaves, grad_out.double())
    outputs = {"output": (out, expected), "running mean": (running_mean, expected_running[0])}
    outputs["running variance"] = (running_var, expected_running[1])
    for name, (actual, reference) in outputs.items():
        torch.testing.assert_close(actual.double(), reference, atol=1e-5, rtol=1e-4, msg=name)
    for name, actual, reference in zip(
        ("y", "γ", "β"), (grad_y, grad_gamma, grad_beta), expected_grads, strict=True
    ):
        torch.testing.assert_close(actual.double(), reference, atol=1e-4, rtol=1e-4, msg=name)
    assert grad_y.is_contiguous(memory_format=memory_format)
