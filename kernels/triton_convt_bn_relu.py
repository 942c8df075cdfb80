"""Triton kernels of `ConvTransposeBNReLU`; imported only when the Triton backend runs.

The transposed convolution is an implicit GEMM split into stride² output phases. Output rows
oh ≡ ph (mod s) are reached only by kernel rows kh ≡ ph + p (mod s), so each phase is a stride-1
convolution with ⌈k/s⌉² taps over the input: nothing is ever multiplied by an inserted zero (for
DCGAN's kernel 4, stride 2, padding 1: four 2×2 convolutions). A GEMM row is one output pixel of
the phase, a column one output channel, the reduction runs over input channels × taps. An input
of 1×1 with no padding (the projection of z in a DCGAN) is one plain GEMM over every
(channel, kh, kw) column at once.

Training mode, three launches forward and two backward:

1. `_convt_gemm` writes the convolution's output y and, in its epilogue, each tile's per-column
   count, mean and sum of squared deviations (two passes over the tile in registers);
2. `_batch_norm_finalize` merges those partials per channel (Chan et al.'s pairwise update, so a
   mean far from zero costs no precision, unlike sum and sum of squares), writes the mean, 1/σ,
   the affine scale and shift, and updates the running statistics as BatchNorm2d does;
3. `_scale_shift_relu` writes max(y·scale + shift, 0).

Backward, `_batch_norm_relu_grad_partials` sums Σ g, Σ g·x̂ and Σ x̂ (g the gradient through the
ReLU mask, recomputed from y) over fixed slices of each channel, and
`_batch_norm_relu_grad_input` adds the slices in a fixed order and writes dy and (once) dγ, dβ:
no float atomics, so results are deterministic. Only y is saved for the backward pass; the ReLU
mask and x̂ are recomputed from it.

Eval mode is one launch: the BatchNorm becomes a per-channel scale and shift applied to the
GEMM's accumulator, which equals convolving with the folded weights, with the ReLU after it.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from gentool.kernels.dispatch import interpreter_enabled

# Epilogues of _convt_gemm.
STORE = 0  # y only: the transposed convolution alone
STORE_AND_STATISTICS = 1  # y and the per-tile partial statistics (training)
SCALE_SHIFT_RELU = 2  # max(y·scale + shift, 0) (eval, BatchNorm folded)

ELEMENTWISE_BLOCK = 1024
# The finalize step is latency-bound: few channels per program, many partials per iteration. The
# interpreter takes small blocks so that tests with small shapes still run several iterations.
FINALIZE_BLOCK_PARTIALS = 16 if interpreter_enabled() else 128
FINALIZE_BLOCK_CHANNELS = 16
# Backward reductions cut each channel into slices: enough programs to fill a large GPU, each
# slice long enough to stream. Fixed by shape alone, so the summation order never changes.
TARGET_PROGRAMS = 1024
MAX_SLICES = 64


def _gemm_configs() -> list[triton.Config]:
    if interpreter_enabled():  # every config would be run and timed by the slow interpreter
        return [triton.Config({"BLOCK_N": 32, "BLOCK_K": 16}, num_warps=4)]
    return [
        triton.Config({"BLOCK_N": block_n, "BLOCK_K": block_k}, num_warps=warps, num_stages=stages)
        for block_n, block_k, warps, stages in [
            (64, 32, 4, 3),
            (128, 32, 4, 3),
            (128, 64, 8, 3),
            (64, 64, 4, 4),
        ]
    ]


@triton.autotune(
    configs=_gemm_configs(),
    key=["in_channels", "columns", "batch", "out_height", "out_width", "BLOCK_M", "EPILOGUE"],
)
@triton.jit
def _convt_gemm(
    x_ptr,
    w_ptr,
    bias_ptr,
    scale_ptr,
    shift_ptr,
    y_ptr,
    count_ptr,
    mean_ptr,
    m2_ptr,
    batch,
    in_channels,
    in_height,
    in_width,
    columns,
    out_height,
    out_width,
    columns_per_channel,
    row_tiles,
    x_stride_n,
    x_stride_c,
    x_stride_h,
    x_stride_w,
    w_stride_in,
    w_stride_out,
    w_stride_h,
    w_stride_w,
    STRIDE: tl.constexpr,
    PADDING: tl.constexpr,
    KERNEL: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    EPILOGUE: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    tile_m = tl.program_id(0)
    tile_n = tl.program_id(1)
    phase = tl.program_id(2)
    phase_h = phase // STRIDE
    phase_w = phase % STRIDE
    # Output row oh = oh_q·s + phase_h takes kernel rows kh = first_kh + t·s from input rows
    # ih = oh_q + shift_h − t (and the same along the width).
    first_kh = (phase_h + PADDING) % STRIDE
    first_kw = (phase_w + PADDING) % STRIDE
    shift_h = (phase_h + PADDING) // STRIDE
    shift_w = (phase_w + PADDING) // STRIDE
    taps_h = (KERNEL - first_kh + STRIDE - 1) // STRIDE
    taps_w = (KERNEL - first_kw + STRIDE - 1) // STRIDE
    rows_h = tl.maximum(out_height - phase_h + STRIDE - 1, 0) // STRIDE
    rows_w = tl.maximum(out_width - phase_w + STRIDE - 1, 0) // STRIDE
    plane = tl.maximum(rows_h * rows_w, 1)

    m = tile_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = m < batch * rows_h * rows_w
    n = m // plane
    oh_q = (m % plane) // tl.maximum(rows_w, 1)
    ow_q = (m % plane) % tl.maximum(rows_w, 1)
    col = tile_n * BLOCK_N + tl.arange(0, BLOCK_N)
    col_ok = col < columns
    k = tl.arange(0, BLOCK_K)

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for tap_h in range(0, taps_h):
        ih = oh_q + shift_h - tap_h
        kh = first_kh + tap_h * STRIDE
        for tap_w in range(0, taps_w):
            iw = ow_q + shift_w - tap_w
            kw = first_kw + tap_w * STRIDE
            a_ok = row_ok & (ih >= 0) & (ih < in_height) & (iw >= 0) & (iw < in_width)
            a_row = tl.where(a_ok, n * x_stride_n + ih * x_stride_h + iw * x_stride_w, 0)
            b_base = kh * w_stride_h + kw * w_stride_w
            for k0 in range(0, in_channels, BLOCK_K):
                channel_in = k0 + k
                k_ok = channel_in < in_channels
                a = tl.load(
                    x_ptr + a_row[:, None] + channel_in[None, :] * x_stride_c,
                    mask=a_ok[:, None] & k_ok[None, :],
                    other=0.0,
                )
                b = tl.load(
                    w_ptr
                    + b_base
                    + channel_in[:, None] * w_stride_in
                    + col[None, :] * w_stride_out,
                    mask=k_ok[:, None] & col_ok[None, :],
                    other=0.0,
                )
                acc = tl.dot(a, b, acc, input_precision=INPUT_PRECISION)

    channel = col // columns_per_channel
    if HAS_BIAS:
        acc += tl.load(bias_ptr + channel, mask=col_ok, other=0.0).to(tl.float32)[None, :]
    oh = oh_q * STRIDE + phase_h
    ow = ow_q * STRIDE + phase_w
    out_plane = out_height * out_width
    y_offset = (n * columns * out_plane + oh * out_width + ow)[:, None] + col[None, :] * out_plane
    out_ok = row_ok[:, None] & col_ok[None, :]
    if EPILOGUE == SCALE_SHIFT_RELU:
        scale = tl.load(scale_ptr + channel, mask=col_ok, other=0.0)
        shift = tl.load(shift_ptr + channel, mask=col_ok, other=0.0)
        out = tl.maximum(acc * scale[None, :] + shift[None, :], 0.0)
        tl.store(y_ptr + y_offset, out.to(y_ptr.dtype.element_ty), mask=out_ok)
    else:
        y = acc.to(y_ptr.dtype.element_ty)
        tl.store(y_ptr + y_offset, y, mask=out_ok)
        if EPILOGUE == STORE_AND_STATISTICS:
            # Statistics of the stored (rounded) values, as BatchNorm sees them.
            y = tl.where(out_ok, y.to(tl.float32), 0.0)
            count = tl.sum(row_ok.to(tl.float32), axis=0)
            tile_mean = tl.sum(y, axis=0) / tl.maximum(count, 1.0)
            centred = tl.where(out_ok, y - tile_mean[None, :], 0.0)
            # The corrected two-pass algorithm: the centred values' own sum removes the
            # rounding error of the first mean from both the mean and the squares.
            correction = tl.sum(centred, axis=0)
            tile_mean += correction / tl.maximum(count, 1.0)
            m2 = tl.sum(centred * centred, axis=0) - correction * correction / tl.maximum(
                count, 1.0
            )
            partial = (phase * row_tiles + tile_m) * columns + col
            tl.store(count_ptr + partial, tl.zeros_like(tile_mean) + count, mask=col_ok)
            tl.store(mean_ptr + partial, tile_mean, mask=col_ok)
            tl.store(m2_ptr + partial, m2, mask=col_ok)


@triton.jit
def _batch_norm_finalize(
    count_ptr,
    mean_ptr,
    m2_ptr,
    gamma_ptr,
    beta_ptr,
    running_mean_ptr,
    running_var_ptr,
    batch_mean_ptr,
    invstd_ptr,
    scale_ptr,
    shift_ptr,
    partials,
    columns,
    columns_per_channel,
    channels,
    eps,
    momentum,
    UPDATE_RUNNING: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    channel = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    channel_ok = channel < channels
    total = tl.zeros((BLOCK_C,), dtype=tl.float32)
    mean = tl.zeros((BLOCK_C,), dtype=tl.float32)
    m2 = tl.zeros((BLOCK_C,), dtype=tl.float32)
    entries = partials * columns_per_channel  # a channel's partials: tiles × its columns
    for start in range(0, entries, BLOCK_P):
        entry = start + tl.arange(0, BLOCK_P)
        tile = entry // columns_per_channel
        column = channel[None, :] * columns_per_channel + (entry % columns_per_channel)[:, None]
        offset = tile[:, None] * columns + column
        ok = (entry < entries)[:, None] & channel_ok[None, :]
        counts = tl.load(count_ptr + offset, mask=ok, other=0.0)
        means = tl.load(mean_ptr + offset, mask=ok, other=0.0)
        block_count = tl.sum(counts, axis=0)
        block_mean = tl.sum(counts * means, axis=0) / tl.maximum(block_count, 1.0)
        spread = means - block_mean[None, :]
        block_m2 = tl.sum(tl.load(m2_ptr + offset, mask=ok, other=0.0), axis=0) + tl.sum(
            counts * spread * spread, axis=0
        )
        # Chan et al.: merge (total, mean, m2) with the block's.
        merged = total + block_count
        delta = block_mean - mean
        weight = block_count / tl.maximum(merged, 1.0)
        mean += delta * weight
        m2 += block_m2 + delta * delta * total * weight
        total = merged

    invstd = 1.0 / tl.sqrt(m2 / tl.maximum(total, 1.0) + eps)
    gamma = tl.load(gamma_ptr + channel, mask=channel_ok, other=1.0).to(tl.float32)
    beta = tl.load(beta_ptr + channel, mask=channel_ok, other=0.0).to(tl.float32)
    scale = gamma * invstd
    tl.store(batch_mean_ptr + channel, mean, mask=channel_ok)
    tl.store(invstd_ptr + channel, invstd, mask=channel_ok)
    tl.store(scale_ptr + channel, scale, mask=channel_ok)
    tl.store(shift_ptr + channel, beta - mean * scale, mask=channel_ok)
    if UPDATE_RUNNING:
        # BatchNorm2d's update: the unbiased batch variance, weighted by momentum.
        unbiased = m2 / tl.maximum(total - 1.0, 1.0)
        running_mean = tl.load(running_mean_ptr + channel, mask=channel_ok, other=0.0)
        running_var = tl.load(running_var_ptr + channel, mask=channel_ok, other=0.0)
        new_mean = (1.0 - momentum) * running_mean.to(tl.float32) + momentum * mean
        new_var = (1.0 - momentum) * running_var.to(tl.float32) + momentum * unbiased
        tl.store(running_mean_ptr + channel, new_mean.to(running_mean.dtype), mask=channel_ok)
        tl.store(running_var_ptr + channel, new_var.to(running_var.dtype), mask=channel_ok)


@triton.jit
def _scale_shift_relu(
    y_ptr, scale_ptr, shift_ptr, out_ptr, numel, channels, plane, BLOCK: tl.constexpr
):
    index = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ok = index < numel
    channel = (index // plane) % channels
    y = tl.load(y_ptr + index, mask=ok, other=0.0).to(tl.float32)
    scale = tl.load(scale_ptr + channel, mask=ok, other=0.0)
    shift = tl.load(shift_ptr + channel, mask=ok, other=0.0)
    out = tl.maximum(y * scale + shift, 0.0)
    tl.store(out_ptr + index, out.to(out_ptr.dtype.element_ty), mask=ok)


@triton.jit
def _channel_slice(
    grad_out_ptr,
    y_ptr,
    start,
    channel,
    channels,
    plane,
    per_channel,
    scale,
    shift,
    BLOCK: tl.constexpr,
):
    """BLOCK values of one channel from `start` (over n, h·w): y and the gradient through the
    ReLU, whose mask max(y·scale + shift, 0) > 0 is the forward's, recomputed from y."""
    r = start + tl.arange(0, BLOCK)
    ok = r < per_channel
    offset = ((r // plane) * channels + channel) * plane + r % plane
    y = tl.load(y_ptr + offset, mask=ok, other=0.0).to(tl.float32)
    grad = tl.load(grad_out_ptr + offset, mask=ok, other=0.0).to(tl.float32)
    return ok, offset, y, tl.where(y * scale + shift > 0.0, grad, 0.0)


@triton.jit
def _batch_norm_relu_grad_partials(
    grad_out_ptr,
    y_ptr,
    mean_ptr,
    invstd_ptr,
    scale_ptr,
    shift_ptr,
    partial_ptr,
    channels,
    plane,
    per_channel,
    slices,
    BLOCK: tl.constexpr,
):
    """Per (channel, slice): Σ g, Σ g·x̂ and Σ x̂, at partial_ptr[0 | 1 | 2, channel, slice]."""
    channel = tl.program_id(0)
    piece = tl.program_id(1)
    mean = tl.load(mean_ptr + channel)
    invstd = tl.load(invstd_ptr + channel)
    scale = tl.load(scale_ptr + channel)
    shift = tl.load(shift_ptr + channel)
    sum_grad = tl.zeros((BLOCK,), dtype=tl.float32)
    sum_grad_xhat = tl.zeros((BLOCK,), dtype=tl.float32)
    sum_xhat = tl.zeros((BLOCK,), dtype=tl.float32)
    for start in range(piece * BLOCK, per_channel, slices * BLOCK):
        ok, _, y, grad = _channel_slice(
            grad_out_ptr, y_ptr, start, channel, channels, plane, per_channel, scale, shift, BLOCK
        )
        xhat = tl.where(ok, (y - mean) * invstd, 0.0)
        sum_grad += grad
        sum_grad_xhat += grad * xhat
        sum_xhat += xhat
    index = channel * slices + piece
    stride = channels * slices
    tl.store(partial_ptr + index, tl.sum(sum_grad, axis=0))
    tl.store(partial_ptr + stride + index, tl.sum(sum_grad_xhat, axis=0))
    tl.store(partial_ptr + 2 * stride + index, tl.sum(sum_xhat, axis=0))


@triton.jit
def _batch_norm_relu_grad_input(
    grad_out_ptr,
    y_ptr,
    mean_ptr,
    invstd_ptr,
    scale_ptr,
    shift_ptr,
    gamma_ptr,
    partial_ptr,
    grad_gamma_ptr,
    grad_beta_ptr,
    grad_y_ptr,
    channels,
    plane,
    per_channel,
    slices,
    BLOCK: tl.constexpr,
    BLOCK_SLICES: tl.constexpr,
):
    channel = tl.program_id(0)
    piece = tl.program_id(1)
    slice_index = tl.arange(0, BLOCK_SLICES)
    slice_ok = slice_index < slices
    index = channel * slices + slice_index
    stride = channels * slices
    sum_grad = tl.sum(tl.load(partial_ptr + index, mask=slice_ok, other=0.0), axis=0)
    sum_grad_xhat = tl.sum(tl.load(partial_ptr + stride + index, mask=slice_ok, other=0.0), axis=0)
    sum_xhat = tl.sum(tl.load(partial_ptr + 2 * stride + index, mask=slice_ok, other=0.0), axis=0)
    # The float32 mean sits up to half an ulp from the true one, which leaves Σ x̂ ≠ 0 when
    # |mean| ≫ σ; centring x̂ by its own mean restores the exact-mean gradients.
    mean_xhat = sum_xhat / per_channel
    grad_gamma = sum_grad_xhat - mean_xhat * sum_grad
    tl.store(grad_gamma_ptr + channel, grad_gamma, mask=piece == 0)
    tl.store(grad_beta_ptr + channel, sum_grad, mask=piece == 0)
    mean = tl.load(mean_ptr + channel)
    invstd = tl.load(invstd_ptr + channel)
    scale = tl.load(scale_ptr + channel)
    shift = tl.load(shift_ptr + channel)
    gamma = tl.load(gamma_ptr + channel).to(tl.float32)
    # dy = γ/σ · (g − mean(g) − x̂·mean(g·x̂)), the batch-statistics BatchNorm backward.
    mean_grad = sum_grad / per_channel
    mean_grad_xhat = grad_gamma / per_channel
    for start in range(piece * BLOCK, per_channel, slices * BLOCK):
        ok, offset, y, grad = _channel_slice(
            grad_out_ptr, y_ptr, start, channel, channels, plane, per_channel, scale, shift, BLOCK
        )
        xhat = (y - mean) * invstd - mean_xhat
        grad_y = gamma * invstd * (grad - mean_grad - xhat * mean_grad_xhat)
        tl.store(grad_y_ptr + offset, grad_y.to(grad_y_ptr.dtype.element_ty), mask=ok)


# --- launchers ------------------------------------------------------------------------------------


def _input_precision(x: torch.Tensor) -> str:
    """float32 GEMMs use TF32 exactly when PyTorch's own convolutions would."""
    use_tf32 = x.is_cuda and x.dtype == torch.float32 and torch.backends.cudnn.allow_tf32
    return "tf32" if use_tf32 else "ieee"


def _block_m(rows: int) -> int:
    if interpreter_enabled():  # fewer, larger programs: the interpreter's cost is per operation
        return 64
    return 128 if rows >= 8192 else 64


def _launch_gemm(
    x: torch.Tensor,
    weight: torch.Tensor,
    stride: int,
    padding: int,
    *,
    epilogue: int,
    bias: torch.Tensor | None = None,
    scale: torch.Tensor | None = None,
    shift: torch.Tensor | None = None,
) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
    """The transposed convolution of x (N, C_in, H, W) by weight (C_in, C_out, k, k), as NCHW.

    Returns the output and, for STORE_AND_STATISTICS, the partials (count, mean, m2), each
    (tiles, columns), with `columns_per_channel` columns per output channel.
    """
    batch, in_channels, height, width = x.shape
    out_channels, kernel = weight.shape[1], weight.shape[2]
    out_height = (height - 1) * stride - 2 * padding + kernel
    out_width = (width - 1) * stride - 2 * padding + kernel
    y = torch.empty((batch, out_channels, out_height, out_width), dtype=x.dtype, device=x.device)
    if height == width == 1 and padding == 0:
        # y[n, c, kh, kw] = Σ x[n, i]·w[i, c, kh, kw]: one GEMM whose columns are (c, kh, kw).
        gemm_weight = weight.reshape(in_channels, out_channels * kernel * kernel, 1, 1)
        columns, columns_per_channel = out_channels * kernel * kernel, kernel * kernel
        gemm_stride, gemm_padding, gemm_kernel, gemm_out = 1, 0, 1, (1, 1)
    else:
        # Laid out (kh, kw, C_in, C_out), so a tile's columns are adjacent in memory; the
        # strides passed below still index it as (C_in, C_out, kh, kw).
        gemm_weight = weight.permute(2, 3, 0, 1).contiguous().permute(2, 3, 0, 1)
        columns, columns_per_channel = out_channels, 1
        gemm_stride, gemm_padding, gemm_kernel = stride, padding, kernel
        gemm_out = (out_height, out_width)
    phases = gemm_stride * gemm_stride
    rows = batch * triton.cdiv(gemm_out[0], gemm_stride) * triton.cdiv(gemm_out[1], gemm_stride)
    block_m = _block_m(rows)
    row_tiles = triton.cdiv(rows, block_m)
    partials = None
    if epilogue == STORE_AND_STATISTICS:
        partials = tuple(
            torch.empty((phases * row_tiles, columns), dtype=torch.float32, device=x.device)
            for _ in range(3)
        )
    unused = y  # a pointer for arguments the epilogue never reads
    count, mean, m2 = partials or (unused, unused, unused)

    def grid(meta: dict) -> tuple[int, int, int]:
        return row_tiles, triton.cdiv(columns, meta["BLOCK_N"]), phases

    _convt_gemm[grid](
        x,
        gemm_weight,
        unused if bias is None else bias,
        unused if scale is None else scale,
        unused if shift is None else shift,
        y,
        count,
        mean,
        m2,
        batch,
        in_channels,
        height,
        width,
        columns,
        *gemm_out,
        columns_per_channel,
        row_tiles,
        *x.stride(),
        *gemm_weight.stride(),
        STRIDE=gemm_stride,
        PADDING=gemm_padding,
        KERNEL=gemm_kernel,
        HAS_BIAS=bias is not None,
        EPILOGUE=epilogue,
        INPUT_PRECISION=_input_precision(x),
        BLOCK_M=block_m,
    )
    return y, partials


def conv_transpose(
    x: torch.Tensor, weight: torch.Tensor, stride: int, padding: int
) -> torch.Tensor:
    """The transposed convolution alone (what the fused kernel spends most of its time on)."""
    return _launch_gemm(x, weight, stride, padding, epilogue=STORE)[0]


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
) -> tuple[torch.Tensor, ...]:
    """out, and what the backward pass needs: y, the batch mean, 1/σ, scale and shift."""
    y, (count, mean, m2) = _launch_gemm(
        x, weight, stride, padding, epilogue=STORE_AND_STATISTICS, bias=bias
    )
    channels = y.shape[1]
    batch_mean, invstd, scale, shift = (
        torch.empty(channels, dtype=torch.float32, device=x.device) for _ in range(4)
    )
    update = running_mean is not None
    _batch_norm_finalize[(triton.cdiv(channels, FINALIZE_BLOCK_CHANNELS),)](
        count,
        mean,
        m2,
        gamma,
        beta,
        running_mean if update else batch_mean,
        running_var if update else invstd,
        batch_mean,
        invstd,
        scale,
        shift,
        count.shape[0],
        count.shape[1],
        count.shape[1] // channels,
        channels,
        eps,
        momentum,
        UPDATE_RUNNING=update,
        BLOCK_P=FINALIZE_BLOCK_PARTIALS,
        BLOCK_C=FINALIZE_BLOCK_CHANNELS,
    )
    out = torch.empty_like(y)
    _scale_shift_relu[(triton.cdiv(y.numel(), ELEMENTWISE_BLOCK),)](
        y,
        scale,
        shift,
        out,
        y.numel(),
        channels,
        y.shape[2] * y.shape[3],
        BLOCK=ELEMENTWISE_BLOCK,
    )
    return out, y, batch_mean, invstd, scale, shift


def eval_forward(
    x: torch.Tensor,
    weight: torch.Tensor,
    scale: torch.Tensor,
    shift: torch.Tensor,
    stride: int,
    padding: int,
) -> torch.Tensor:
    """max(conv(x)·scale + shift, 0) in one launch; scale and shift hold the folded BatchNorm."""
    return _launch_gemm(
        x, weight, stride, padding, epilogue=SCALE_SHIFT_RELU, scale=scale, shift=shift
    )[0]


def backward(
    grad_out: torch.Tensor,
    y: torch.Tensor,
    gamma: torch.Tensor,
    batch_mean: torch.Tensor,
    invstd: torch.Tensor,
    scale: torch.Tensor,
    shift: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The gradients of the convolution's output y, of γ and of β (both float32)."""
    batch, channels, height, width = y.shape
    plane = height * width
    per_channel = batch * plane
    slices = max(
        1, min(MAX_SLICES, TARGET_PROGRAMS // channels, triton.cdiv(per_channel, ELEMENTWISE_BLOCK))
    )
    partials = torch.empty((3, channels, slices), dtype=torch.float32, device=y.device)
    grid = (channels, slices)
    _batch_norm_relu_grad_partials[grid](
        grad_out,
        y,
        batch_mean,
        invstd,
        scale,
        shift,
        partials,
        channels,
        plane,
        per_channel,
        slices,
        BLOCK=ELEMENTWISE_BLOCK,
    )
    grad_gamma = torch.empty(channels, dtype=torch.float32, device=y.device)
    grad_beta = torch.empty_like(grad_gamma)
    grad_y = torch.empty_like(y)
    _batch_norm_relu_grad_input[grid](
        grad_out,
        y,
        batch_mean,
        invstd,
        scale,
        shift,
        gamma,
        partials,
        grad_gamma,
        grad_beta,
        grad_y,
        channels,
        plane,
        per_channel,
        slices,
        BLOCK=ELEMENTWISE_BLOCK,
        BLOCK_SLICES=triton.next_power_of_2(slices),
    )
    return grad_y, grad_gamma, grad_beta
