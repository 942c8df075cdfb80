"""ConvTranspose2d + BatchNorm2d + ReLU as one module, with fused Triton kernels.

The module subclasses `nn.Sequential` of the three unfused layers, so its parameters, buffers and
state_dict keys ("0.weight", "1.weight", "1.running_mean", …) are exactly theirs: checkpoints move
between this module and a plain `nn.Sequential(ConvTranspose2d, BatchNorm2d, ReLU)` either way.

`convt_bn_relu` is the op itself; `kernels/dispatch.py` picks its backend. The PyTorch backend is
the plain composition, which is also the reference. The Triton backend (`convt_bn_relu_fused`)
runs the vendor's transposed convolution and fuses what follows it: the batch statistics, the
normalisation and ReLU, and their backward; `convolution="gemm"` runs gentool's implicit-GEMM
convolution instead, with the statistics in its epilogue and, in eval mode, the BatchNorm folded
into it. The convolution's own gradients come from PyTorch's `convolution_backward`.

`fused_blocks_running_plain` tells a trainer which blocks of a model would run as their plain
layers (replaced layers, or under torch.compile), for it to refuse `--kernels triton` there.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gentool.kernels.dispatch import Convolution, choose_backend, run_with_fallback

MAX_ELEMENTS = 2**31 - 1  # offsets are int32 in the kernels
CONVOLUTIONS = ("vendor", "gemm")


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
    convolution: Convolution = "vendor",
) -> torch.Tensor:
    """relu(batch_norm(conv_transpose2d(x, weight, bias, stride, padding))), like the layers.

    In training (or without running statistics) the batch statistics normalise, and the running
    statistics, when given, are updated in place with `momentum`; otherwise the running ones do.
    On the Triton backend `convolution` picks the convolution: "vendor" (PyTorch's, cuDNN on a
    GPU) or "gemm" (gentool's implicit GEMM). The Triton backend has no eval-mode backward: eval
    mode with gradients runs the composition.
    """
    _check_convolution(convolution)
    use_batch_stats = training or running_mean is None

    def composition() -> torch.Tensor:
        y = F.conv_transpose2d(x, weight, bias, stride, padding)
        y = F.batch_norm(y, running_mean, running_var, gamma, beta, use_batch_stats, momentum, eps)
        return F.relu(y)

    needs_grad = torch.is_grad_enabled() and _any_requires_grad(x, weight, bias, gamma, beta)
    if not _triton_applies(x, weight, stride, padding) or not (use_batch_stats or not needs_grad):
        return composition()
    from gentool.kernels import convt_bn_relu_fused as fused

    compute_x = _in_autocast_dtype(x)
    if use_batch_stats:
        _check_batch(x, weight, stride, padding)
        update = training and running_mean is not None
        return run_with_fallback(
            "convt_bn_relu",
            lambda: fused.training_forward(
                compute_x, weight, bias, gamma, beta,
                running_mean if update else None, running_var if update else None,
                momentum, eps, stride, padding, convolution,
            ),
            composition,
        )  # fmt: skip
    scale, shift = _folded_batch_norm(bias, gamma, beta, running_mean, running_var, eps)
    return run_with_fallback(
        "convt_bn_relu",
        lambda: fused.eval_forward(
            compute_x, weight.to(compute_x.dtype), None, scale, shift, stride, padding, convolution
        ),
        composition,
    )


class ConvTransposeBNReLU(nn.Sequential):
    """A drop-in for `nn.Sequential(nn.ConvTranspose2d, nn.BatchNorm2d, nn.ReLU)`.

    `convolution` picks the convolution of the Triton backend (see `convt_bn_relu`); it is not
    part of the state_dict.
    """

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
        convolution: Convolution = "vendor",
    ) -> None:
        super().__init__(
            nn.ConvTranspose2d(in_channels, out_channels, kernel_size, stride, padding, bias=bias),
            nn.BatchNorm2d(out_channels, eps=eps, momentum=momentum),
            nn.ReLU(inplace=True),
        )
        self.convolution = _check_convolution(convolution)

    @property
    def conv(self) -> nn.ConvTranspose2d:
        return self[0]

    @property
    def bn(self) -> nn.BatchNorm2d:
        return self[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        traced = torch.compiler.is_compiling() or torch.jit.is_tracing()
        if x.dim() != 4 or not self.layers_are_plain() or traced:
            # torch.compile, torch.export and torch.jit.trace see through the composition, but
            # not through the Triton kernels (nor the checks that pick them).
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
            convolution=self.convolution,
        )

    def layers_are_plain(self) -> bool:
        """Whether the layers are still the plain ones the fused op computes.

        Layers replaced or reconfigured after construction (a SyncBatchNorm for distributed
        training, say) make the block run as the composition of its layers.
        """
        conv, bn = self[0], self[1]
        return (
            len(self) == 3
            and type(conv) is nn.ConvTranspose2d
            and type(bn) is nn.BatchNorm2d
            and type(self[2]) is nn.ReLU
            and conv.groups == 1
            and conv.dilation == (1, 1)
            and conv.output_padding == (0, 0)
            and conv.padding_mode == "zeros"
            and len(set(conv.kernel_size)) == len(set(conv.stride)) == len(set(conv.padding)) == 1
            and bn.affine
        )


def fused_blocks_running_plain(model: nn.Module, *, compiled: bool = False) -> list[str]:
    """The names of `model`'s ConvTransposeBNReLU blocks that would run as their plain layers:
    each whose layers were replaced or reconfigured (`layers_are_plain`), and every one when
    the model runs under torch.compile (`compiled`). A trainer refuses `--kernels triton`
    when this is not empty, since the fused kernels would not run."""
    return [
        name
        for name, module in model.named_modules()
        if isinstance(module, ConvTransposeBNReLU) and (compiled or not module.layers_are_plain())
    ]


def probe_convt_bn_relu(device: torch.device, dtype: torch.dtype) -> None:
    """Run the Triton path once on small inputs (see `gentool.kernels.preflight`): training
    forward and backward, and the eval forward."""
    from gentool.kernels import convt_bn_relu_fused as fused

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 3, 3, generator=generator).to(device, dtype).requires_grad_(True)
    weight = torch.randn(4, 3, 4, 4, generator=generator).to(device, dtype).requires_grad_(True)
    gamma, beta = (torch.ones(3, device=device).requires_grad_(True) for _ in range(2))
    running_mean, running_var = torch.zeros(3, device=device), torch.ones(3, device=device)
    out = fused.training_forward(
        x, weight, None, gamma, beta, running_mean, running_var, 0.1, 1e-5, 2, 1, "vendor"
    )
    out.backward(torch.ones_like(out))
    with torch.no_grad():
        fused.eval_forward(x, weight, None, gamma, beta, 2, 1, "vendor")


def _check_convolution(convolution: str) -> Convolution:
    if convolution not in CONVOLUTIONS:
        raise ValueError(
            f"convolution must be one of {', '.join(CONVOLUTIONS)}; got {convolution!r}"
        )
    return convolution  # type: ignore[return-value]


def _in_autocast_dtype(x: torch.Tensor) -> torch.Tensor:
    """x in the dtype its convolution runs in: autocast's, where autocast is on."""
    device_type = x.device.type
    if torch.amp.is_autocast_available(device_type) and torch.is_autocast_enabled(device_type):
        return x.to(torch.get_autocast_dtype(device_type))
    return x


def _folded_batch_norm(
    bias: torch.Tensor | None,
    gamma: torch.Tensor,
    beta: torch.Tensor,
    running_mean: torch.Tensor,
    running_var: torch.Tensor,
    eps: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The eval-mode BatchNorm (and the convolution's bias) as a per-channel scale and shift."""
    scale = gamma.float() * torch.rsqrt(running_var.float() + eps)
    shift = beta.float() - running_mean.float() * scale
    if bias is not None:
        shift = shift + bias.float() * scale
    return scale, shift


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
