"""The Triton paths of `convt_bn_relu`: training as an autograd Function, and the eval forward.

Two convolutions can come before the fused BatchNorm + ReLU kernels (`triton_batch_norm`):

- ``vendor``: PyTorch's transposed convolution (cuDNN's on a GPU), whose output y the Triton
  kernels then take in whatever layout it has; what ``auto`` and ``--kernels triton`` run;
- ``gemm``: gentool's implicit GEMM (`triton_convt_gemm`), which gathers the batch statistics in
  its epilogue and, in eval mode, folds the BatchNorm in, one launch; benchmarked beside it.

Both save, for the backward pass, x, the weight in x's dtype, y (not the ReLU output) and the
per-channel statistics; the backward pass fuses the ReLU mask and the BatchNorm backward, then
takes the convolution's input and weight gradients from PyTorch's `convolution_backward` (cuDNN's
on a GPU). The output has x's memory format, as PyTorch's layers give it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from gentool.kernels import triton_batch_norm as batch_norm
from gentool.kernels import triton_batch_norm_backward as batch_norm_backward
from gentool.kernels.dispatch import Convolution, requested_backend, run_with_fallback


def training_forward(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    gamma: torch.Tensor,
    beta: torch.Tensor,
    running_mean: torch.Tensor | None,
    running_var: torch.Tensor | None,
    momentum: float,
    eps: float,
    stride: int,
    padding: int,
    convolution: Convolution,
) -> torch.Tensor:
    """relu(batch_norm(conv_transpose2d(x))) by the batch's statistics, differentiable."""
    return FusedTraining.apply(
        x, weight, bias, gamma, beta, running_mean, running_var, momentum, eps, stride, padding,
        convolution,
    )  # fmt: skip


def eval_forward(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    scale: torch.Tensor,
    shift: torch.Tensor,
    stride: int,
    padding: int,
    convolution: Convolution,
) -> torch.Tensor:
    """max(conv(x)·scale + shift, 0), scale and shift holding the folded BatchNorm (and bias)."""
    if convolution == "gemm":
        from gentool.kernels import triton_convt_gemm as gemm

        out, _ = gemm.conv_transpose(
            x, weight, stride, padding, epilogue=gemm.SCALE_SHIFT_RELU, scale=scale, shift=shift
        )
        return out.contiguous(memory_format=_memory_format(x))
    y = _vendor_convolution(x, weight, None, stride, padding)
    return batch_norm.scale_shift_relu(y, scale, shift, y)


class FusedTraining(torch.autograd.Function):
    """Saves x, the weight in x's dtype, y and the batch statistics (not the ReLU output)."""

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        gamma: torch.Tensor,
        beta: torch.Tensor,
        running_mean: torch.Tensor | None,
        running_var: torch.Tensor | None,
        momentum: float,
        eps: float,
        stride: int,
        padding: int,
        convolution: Convolution,
    ) -> torch.Tensor:
        compute_weight = weight.to(x.dtype)
        if convolution == "gemm":
            from gentool.kernels import triton_convt_gemm as gemm

            y, partials = gemm.conv_transpose(
                x, compute_weight, stride, padding, epilogue=gemm.STORE_AND_STATISTICS, bias=bias
            )
        else:
            y = _vendor_convolution(x, compute_weight, bias, stride, padding)
            partials = batch_norm.statistics(y)
        out = torch.empty_like(y, memory_format=_memory_format(x))
        statistics = batch_norm.normalize_training(
            y, partials, gamma, beta, running_mean, running_var, momentum, eps, out
        )
        ctx.save_for_backward(
            x,
            compute_weight,
            y,
            gamma,
            statistics.mean,
            statistics.invstd,
            statistics.scale,
            statistics.shift,
        )
        ctx.geometry = stride, padding, eps
        ctx.backend = requested_backend()
        ctx.dtypes = weight.dtype, None if bias is None else bias.dtype, gamma.dtype, beta.dtype
        return out

    @staticmethod
    def backward(
        ctx: torch.autograd.function.FunctionCtx, grad_out: torch.Tensor
    ) -> tuple[torch.Tensor | None, ...]:
        x, weight, y, gamma, mean, invstd, scale, shift = ctx.saved_tensors
        stride, padding, eps = ctx.geometry
        weight_dtype, bias_dtype, gamma_dtype, beta_dtype = ctx.dtypes
        per_channel = mean, invstd, scale, shift
        grad_y, grad_gamma, grad_beta = run_with_fallback(
            "convt_bn_relu",
            lambda: batch_norm_backward.backward(grad_out, y, gamma, *per_channel),
            lambda: _batch_norm_relu_backward_in_pytorch(grad_out, y, gamma, *per_channel, eps),
            requested=ctx.backend,
        )
        needs_x, needs_weight, needs_bias = ctx.needs_input_grad[:3]
        grad_x = grad_weight = grad_bias = None
        if needs_x or needs_weight:
            grad_x, grad_weight, _ = torch.ops.aten.convolution_backward(
                grad_y,
                x,
                weight,
                None,
                [stride, stride],
                [padding, padding],
                [1, 1],
                True,  # transposed
                [0, 0],
                1,
                [needs_x, needs_weight, False],
            )
        if needs_weight:
            grad_weight = grad_weight.to(weight_dtype)
        if needs_bias:
            grad_bias = grad_y.sum(dim=(0, 2, 3), dtype=torch.float32).to(bias_dtype)
        return (
            grad_x,
            grad_weight,
            grad_bias,
            grad_gamma.to(gamma_dtype),
            grad_beta.to(beta_dtype),
            *(None,) * 7,
        )


def _vendor_convolution(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: int, padding: int
) -> torch.Tensor:
    """PyTorch's transposed convolution, in a layout the BatchNorm kernels take."""
    bias = None if bias is None else bias.to(x.dtype)
    y = F.conv_transpose2d(x, weight.to(x.dtype), bias, stride, padding)
    return y if batch_norm.pixel_strides(y) is not None else y.contiguous()


def _memory_format(x: torch.Tensor) -> torch.memory_format:
    """x's memory format: channels-last when it is laid out so (and not also NCHW)."""
    channels_last = x.is_contiguous(memory_format=torch.channels_last)
    return (
        torch.channels_last if channels_last and not x.is_contiguous() else torch.contiguous_format
    )


def _batch_norm_relu_backward_in_pytorch(
    grad_out: torch.Tensor,
    y: torch.Tensor,
    gamma: torch.Tensor,
    mean: torch.Tensor,
    invstd: torch.Tensor,
    scale: torch.Tensor,
    shift: torch.Tensor,
    eps: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The backward kernels' result from PyTorch's BatchNorm and ReLU, where they failed."""
    beta = shift + mean * scale
    with torch.enable_grad():
        leaves = [tensor.detach().float().requires_grad_(True) for tensor in (y, gamma, beta)]
        out = F.relu(F.batch_norm(leaves[0], None, None, leaves[1], leaves[2], True, 0.0, eps))
        grad_y, grad_gamma, grad_beta = torch.autograd.grad(out, leaves, grad_out.float())
    return grad_y.to(y.dtype), grad_gamma, grad_beta
