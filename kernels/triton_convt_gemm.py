"""The transposed convolution as a Triton implicit GEMM, with BatchNorm in its epilogue.

Imported only when the GEMM path of `ConvTransposeBNReLU` runs. The convolution is split into
stride² output phases: output rows oh ≡ ph (mod s) are reached only by kernel rows
kh ≡ ph + p (mod s), so each phase is a stride-1 convolution with ⌈k/s⌉² taps over the input and
nothing is multiplied by an inserted zero (for DCGAN's kernel 4, stride 2, padding 1: four 2×2
convolutions). A GEMM row is one output pixel of the phase, a column one output channel, and the
reduction runs over taps × input channels as one pipelined loop. An input of 1×1 with no padding
(the projection of z in a DCGAN) is one plain GEMM whose columns are every (kh, kw, channel).

Inside the kernel everything runs along channels: x is read as (N, H, W, C_in), the weight as
(kh, kw, C_out, C_in) (K-major, the layout tf32 tensor cores take without a transpose) and y
written as (N, OH, OW, C_out), so the loads of both operands and the stores are contiguous
(16-byte vectors where the channel counts are multiples of 16). An NCHW input is copied to
channels-last first; y is a channels-last tensor.

Epilogues: STORE writes y; STORE_AND_STATISTICS also writes each tile's per-column count, mean
and sum of squared deviations (two passes over the tile in registers), which
`triton_batch_norm.finalize` merges; SCALE_SHIFT_RELU writes max(y·scale + shift, 0), the eval
block with BatchNorm folded in.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl

from gentool.kernels.launches import autotune, launch

STORE = tl.constexpr(0)
STORE_AND_STATISTICS = tl.constexpr(1)
SCALE_SHIFT_RELU = tl.constexpr(2)
LARGE_GEMM_ROWS = 8192  # phases with at least this many rows take 128-row tiles

GEMM_CONFIGS = [
    triton.Config({"BLOCK_N": block_n, "BLOCK_K": block_k}, num_warps=warps, num_stages=stages)
    for block_n, block_k, warps, stages in [(64, 32, 8, 3), (128, 32, 8, 3), (32, 64, 4, 3)]
]


@autotune(
    configs=GEMM_CONFIGS,
    key=["in_channels", "columns", "batch", "out_height", "out_width", "BLOCK_M", "EPILOGUE"],
)
@triton.jit(
    do_not_specialize=["batch", "in_height", "in_width", "out_height", "out_width", "row_tiles"]
)
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
    channels,
    columns,
    out_height,
    out_width,
    row_tiles,
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
    """One BLOCK_M × BLOCK_N tile of y; see the module docstring.

    Its occupancy is 6–25% (the accumulator and its statistics take 100–250 registers), which is
    enough, by Little's law: a GEMM hides memory latency with its software pipeline, not with
    resident warps. With num_stages S, a program has S − 1 tiles of A and B in flight while it
    multiplies the current one: (S − 1)·(BLOCK_M·BLOCK_K + BLOCK_K·BLOCK_N)·bytes. The least of
    GEMM_CONFIGS is 2·(64·32 + 32·64)·2 B = 16 KiB in bfloat16 (32 KiB in float32) for a single
    program per SM, above the 14.9 KiB an H100 SM needs in flight (3.35 TB/s × 600 ns / 132 SMs)
    and the 11.1 KiB of an A100 (2.04 TB/s × 600 ns / 108).
    """
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
    # Every phase runs the most taps any has, its own beyond their count masked: a loop bound
    # known while compiling, the same for every program.
    MOST_TAPS: tl.constexpr = (KERNEL + STRIDE - 1) // STRIDE
    rows_h = tl.maximum(out_height - phase_h + STRIDE - 1, 0) // STRIDE
    rows_w = tl.maximum(tl.maximum(out_width - phase_w + STRIDE - 1, 0) // STRIDE, 1)
    plane = tl.maximum(rows_h * rows_w, 1)

    m = tile_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = m < batch * rows_h * rows_w
    n = m // plane
    oh_q = (m % plane) // rows_w
    ow_q = (m % plane) % rows_w
    col = tile_n * BLOCK_N + tl.arange(0, BLOCK_N)
    col_ok = col < columns
    k = tl.arange(0, BLOCK_K)
    k_blocks = tl.cdiv(in_channels, BLOCK_K)

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for step in range(0, MOST_TAPS * MOST_TAPS * k_blocks):
        tap = step // k_blocks
        channel_in = (step % k_blocks) * BLOCK_K + k
        tap_h = tap // MOST_TAPS
        tap_w = tap % MOST_TAPS
        ih = oh_q + shift_h - tap_h
        iw = ow_q + shift_w - tap_w
        a_ok = row_ok & (ih >= 0) & (ih < in_height) & (iw >= 0) & (iw < in_width)
        pixel = tl.where(a_ok, (n * in_height + ih) * in_width + iw, 0)
        # A tap beyond the phase's own masks every channel: it adds nothing.
        tap_ok = (tap_h < taps_h) & (tap_w < taps_w)
        k_ok = channel_in < tl.where(tap_ok, in_channels, 0)
        a = tl.load(
            x_ptr + pixel[:, None] * in_channels + channel_in[None, :],
            mask=a_ok[:, None] & k_ok[None, :],
            other=0.0,
        )
        kernel_row = (first_kh + tap_h * STRIDE) * KERNEL + first_kw + tap_w * STRIDE
        b = tl.load(
            w_ptr + (kernel_row * columns + col)[None, :] * in_channels + channel_in[:, None],
            mask=k_ok[:, None] & col_ok[None, :],
            other=0.0,
        )
        acc = tl.dot(a, b, acc, input_precision=INPUT_PRECISION)

    channel = col % channels
    if HAS_BIAS:
        acc += tl.load(bias_ptr + channel, mask=col_ok, other=0.0).to(tl.float32)[None, :]
    out_pixel = (n * out_height + oh_q * STRIDE + phase_h) * out_width + ow_q * STRIDE + phase_w
    y_offset = out_pixel[:, None] * columns + col[None, :]
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
            rows_in_tile = tl.sum(row_ok.to(tl.float32), axis=0)
            count = tl.maximum(rows_in_tile, 1.0)
            tile_mean = tl.sum(y, axis=0) / count
            centred = tl.where(out_ok, y - tile_mean[None, :], 0.0)
            # The corrected two-pass algorithm: the centred values' own sum removes the
            # rounding error of the first mean from both the mean and the squares.
            correction = tl.sum(centred, axis=0)
            m2 = tl.sum(centred * centred, axis=0) - correction * correction / count
            partial = (phase * row_tiles + tile_m) * columns + col
            tl.store(count_ptr + partial, tl.zeros_like(m2) + rows_in_tile, mask=col_ok)
            tl.store(mean_ptr + partial, tile_mean + correction / count, mask=col_ok)
            tl.store(m2_ptr + partial, m2, mask=col_ok)


def _input_precision(x: torch.Tensor) -> str:
    """float32 GEMMs use TF32 exactly when PyTorch's own convolutions would on a GPU."""
    use_tf32 = x.dtype == torch.float32 and torch.backends.cudnn.allow_tf32
    return "tf32" if use_tf32 else "ieee"


class _Gemm(NamedTuple):
    """The implicit GEMM of one transposed convolution."""

    weight: torch.Tensor  # laid out (kh, kw, columns, C_in): K-major, as tf32 tensor cores take it
    stride: int
    padding: int
    kernel: int
    out_height: int  # of the GEMM's output, 1×1 for the projection
    out_width: int
    columns: int
    phases: int
    block_m: int
    row_tiles: int


def _gemm(x: torch.Tensor, weight: torch.Tensor, stride: int, padding: int) -> _Gemm:
    batch, in_channels, height, width = x.shape
    kernel = weight.shape[2]
    if height == width == 1 and padding == 0:
        # y[n, kh, kw, c] = Σ x[n, i]·w[i, c, kh, kw]: one GEMM whose columns are (kh, kw, c).
        gemm_weight = weight.permute(2, 3, 1, 0).contiguous()
        stride, padding, kernel, out_height, out_width = 1, 0, 1, 1, 1
    else:
        gemm_weight = weight.permute(2, 3, 1, 0).contiguous()  # (kh, kw, C_out, C_in)
        out_height = (height - 1) * stride - 2 * padding + kernel
        out_width = (width - 1) * stride - 2 * padding + kernel
    columns = gemm_weight.numel() // (in_channels * kernel * kernel)
    rows = batch * triton.cdiv(out_height, stride) * triton.cdiv(out_width, stride)
    block_m = 128 if rows >= LARGE_GEMM_ROWS else 64
    return _Gemm(
        gemm_weight, stride, padding, kernel, out_height, out_width, columns, stride * stride,
        block_m, triton.cdiv(rows, block_m),
    )  # fmt: skip


def conv_transpose(
    x: torch.Tensor,
    weight: torch.Tensor,
    stride: int,
    padding: int,
    *,
    epilogue: int = STORE,
    bias: torch.Tensor | None = None,
    scale: torch.Tensor | None = None,
    shift: torch.Tensor | None = None,
) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
    """The transposed convolution of x (N, C_in, H, W) by weight (C_in, C_out, k, k), as a
    channels-last (N, C_out, OH, OW) tensor, through `epilogue`.

    Returns it and, for STORE_AND_STATISTICS, the partials (count, mean, m2), each
    (phases · row tiles, columns) with channel = column % C_out.
    """
    batch, in_channels, height, width = x.shape
    out_channels, kernel = weight.shape[1], weight.shape[2]
    out_size = (
        (height - 1) * stride - 2 * padding + kernel,
        (width - 1) * stride - 2 * padding + kernel,
    )
    x = x.contiguous(memory_format=torch.channels_last)
    y = torch.empty(
        (batch, out_channels, *out_size),
        dtype=x.dtype,
        device=x.device,
        memory_format=torch.channels_last,
    )
    gemm = _gemm(x, weight, stride, padding)
    partials = None
    if epilogue == STORE_AND_STATISTICS:
        shape = (gemm.phases * gemm.row_tiles, gemm.columns)
        partials = tuple(torch.empty(shape, dtype=torch.float32, device=x.device) for _ in range(3))
    unused = y  # a pointer for arguments the epilogue never reads

    def grid(meta: dict) -> tuple[int, int, int]:
        return gemm.row_tiles, triton.cdiv(gemm.columns, meta["BLOCK_N"]), gemm.phases

    pointers = (x, gemm.weight, bias, scale, shift, y, *(partials or (None, None, None)))
    sizes = (batch, in_channels, height, width, out_channels, gemm.columns)
    gemm_sizes = (gemm.out_height, gemm.out_width, gemm.row_tiles)
    launch(
        _convt_gemm,
        grid,
        *(unused if pointer is None else pointer for pointer in pointers),
        *sizes,
        *gemm_sizes,
        STRIDE=gemm.stride,
        PADDING=gemm.padding,
        KERNEL=gemm.kernel,
        HAS_BIAS=bias is not None,
        EPILOGUE=epilogue,
        INPUT_PRECISION=_input_precision(x),
        BLOCK_M=gemm.block_m,
    )
    return y, partials
