"""ConvTranspose2d + BatchNorm2d + ReLU as one module, with fused Triton kernels.

The module subclasses `nn.Sequential` of the three unfused layers, so its parameters, buffers and
state_dict keys ("0.weight", "1.weight", "1.running_mean", …) are exactly theirs: checkpoints move
between this module and a plain `nn.Sequential(ConvTranspose2d, BatchNorm2d, ReLU)` either way.

`convt_bn_relu` is the op itself; `kernels/dispatch.py` picks its backend. The PyTorch backend is
the plain composition, which is also the reference. The Triton backend (`triton_convt_bn_relu`)
fuses the batch statistics into the convolution's epilogue in training, folds the BatchNorm into
the convolution in eval mode, and fuses the ReLU and BatchNorm backward; the convolution's own
gradients come from PyTorch's `convolution_backward` (cuDNN on a GPU).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gentool.kernels.dispatch import choose_backend

MAX_ELEMENTS = 2**31 - 1  # offsets are int32 in the kernels


def convt_bn_relu(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    gamma: torch.Tensor,
    beta: torch.Tensor,
    running_mean: torch.Tensor | None,
    running_var: torch.Tensor | None,
    *,
    training: bool,
    momentum: float,
    eps: float,
    stride: int,
    padding: int,
) -> torch.Tensor:
    """relu(batch_norm(conv_transpose2d(x, weight, bias, stride, padding))), like the layers.

    In training (or without running statistics) the batch statistics normalise, and the running
    statistics, when given, are updated in place with `momentum`; otherwise the running ones do.
    The Triton backend has no eval-mode backward: eval mode with gradients runs the composition.
    """
    use_batch_stats = training or running_mean is None
    if _triton_applies(x, weight, stride, padding):
        from gentool.kernels import triton_convt_bn_relu as kernels

        if torch.is_autocast_enabled(x.device.type):  # the convolution runs in autocast's dtype
            x = x.to(torch.get_autocast_dtype(x.device.type))
        if use_batch_stats:
            _check_batch(x, weight, stride, padding)
            return _FusedTraining.apply(
                x,
                weight,
                bias,
                gamma,
                beta,
                running_mean,
                running_var,
                momentum,
                eps,
                stride,
                padding,
                training,
            )
        if not (torch.is_grad_enabled() and _any_requires_grad(x, weight, bias, gamma, beta)):
            scale = gamma.float() * torch.rsqrt(running_var.float() + eps)
            shift = beta.float() - running_mean.float() * scale
            if bias is not None:
                shift = shift + bias.float() * scale
            return kernels.eval_forward(x, weight.to(x.dtype), scale, shift, stride, padding)
    # The layers' own composition: the PyTorch backend, and the reference of the kernels.
    y = F.conv_transpose2d(x, weight, bias, stride, padding)
    y = F.batch_norm(y, running_mean, running_var, gamma, beta, use_batch_stats, momentum, eps)
    return F.relu(y)


class ConvTransposeBNReLU(nn.Sequential):
    """A drop-in for `nn.Sequential(nn.ConvTranspose2d, nn.BatchNorm2d, nn.ReLU)`."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        *,
        bias: bool = False,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
    ) -> None:
        super().__init__(
            nn.ConvTranspose2d(in_channels, out_channels, kernel_size, stride, padding, bias=bias),
            nn.BatchNorm2d(out_channels, eps=eps, momentum=momentum),
            nn.ReLU(inplace=True),
        )

    @property
    def conv(self) -> nn.ConvTranspose2d:
        return self[0]

    @property
    def bn(self) -> nn.BatchNorm2d:
        return self[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._is_fusable(x):
            return super().forward(x)
        conv, bn = self.conv, self.bn
        momentum = 0.0 if bn.momentum is None else bn.momentum
        if self.training and bn.track_running_stats:
            bn.num_batches_tracked.add_(1)
            if bn.momentum is None:  # a cumulative moving average, as BatchNorm2d keeps it
                momentum = 1.0 / float(bn.num_batches_tracked)
        return convt_bn_relu(
            x,
            conv.weight,
            conv.bias,
            bn.weight,
            bn.bias,
            bn.running_mean,
            bn.running_var,
            training=self.training,
            momentum=momentum,
            eps=bn.eps,
            stride=conv.stride[0],
            padding=conv.padding[0],
        )

    def _is_fusable(self, x: torch.Tensor) -> bool:
        """Whether the layers are still the plain ones the op computes, on a 4-D input.

        Layers replaced or reconfigured after construction (a SyncBatchNorm for distributed
        training, say) run as the composition; so does anything under torch.compile, whose
        compiler sees through the composition but not through the Triton kernels.
        """
        conv, bn = self[0], self[1]
        return (
            x.dim() == 4
            and len(self) == 3
            and type(conv) is nn.ConvTranspose2d
            and type(bn) is nn.BatchNorm2d
            and type(self[2]) is nn.ReLU
            and conv.groups == 1
            and conv.dilation == (1, 1)
            and conv.output_padding == (0, 0)
            and conv.padding_mode == "zeros"
            and len(set(conv.kernel_size)) == len(set(conv.stride)) == len(set(conv.padding)) == 1
            and bn.affine
            and not torch.compiler.is_compiling()
        )


class _FusedTraining(torch.autograd.Function):
    """The Triton training path; saves x, the weight in x's dtype, and y (not the ReLU output)."""

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
        training: bool,
    ) -> torch.Tensor:
        from gentool.kernels import triton_convt_bn_relu as kernels

        update = training and running_mean is not None
        x = x.contiguous()
        compute_weight = weight.to(x.dtype).contiguous()
        out, y, batch_mean, invstd, scale, shift = kernels.training_forward(
            x,
            compute_weight,
            bias,
            gamma,
            beta,
            running_mean if update else None,
            running_var if update else None,
            momentum,
            eps,
            stride,
            padding,
        )
        ctx.save_for_backward(x, compute_weight, y, gamma, batch_mean, invstd, scale, shift)
        ctx.geometry = stride, padding
        ctx.dtypes = weight.dtype, None if bias is None else bias.dtype, gamma.dtype, beta.dtype
        return out

    @staticmethod
    def backward(
        ctx: torch.autograd.function.FunctionCtx, grad_out: torch.Tensor
    ) -> tuple[torch.Tensor | None, ...]:
        from gentool.kernels import triton_convt_bn_relu as kernels

        x, weight, y, gamma, batch_mean, invstd, scale, shift = ctx.saved_tensors
        stride, padding = ctx.geometry
        weight_dtype, bias_dtype, gamma_dtype, beta_dtype = ctx.dtypes
        grad_y, grad_gamma, grad_beta = kernels.backward(
            grad_out.contiguous(), y, gamma, batch_mean, invstd, scale, shift
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


def _triton_applies(x: torch.Tensor, weight: torch.Tensor, stride: int, padding: int) -> bool:
    if x.numel() == 0 or choose_backend("convt_bn_relu", x) == "torch":
        return False
    out_side = (max(x.shape[2], x.shape[3]) - 1) * stride - 2 * padding + weight.shape[2]
    largest = max(x.numel(), x.shape[0] * weight.shape[1] * out_side * out_side, weight.numel())
    return largest <= MAX_ELEMENTS


def _check_batch(x: torch.Tensor, weight: torch.Tensor, stride: int, padding: int) -> None:
    out_height = (x.shape[2] - 1) * stride - 2 * padding + weight.shape[2]
    out_width = (x.shape[3] - 1) * stride - 2 * padding + weight.shape[3]
    if x.shape[0] * out_height * out_width < 2:
        raise ValueError(
            "Expected more than 1 value per channel when training, got input size "
            f"{[x.shape[0], weight.shape[1], out_height, out_width]}"
        )


def _any_requires_grad(*tensors: torch.Tensor | None) -> bool:
    return any(tensor is not None and tensor.requires_grad for tensor in tensors)
