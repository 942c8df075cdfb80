"""Triton kernels for BatchNorm + ReLU after a convolution: statistics, normalisation, backward.

`ConvTransposeBNReLU`'s Triton paths share these; imported only when one of them runs. A tensor
(N, C, H, W) is taken with its own strides, as (N, C, P) with P = H·W pixels, so NCHW and
channels-last tensors both work without a copy: Triton compiles a kernel for each layout (a
stride of 1 is specialised), loads along whichever dimension is contiguous, and converts layouts
through shared memory where the input's and the output's differ. Each program takes
BLOCK_P pixels × BLOCK_C channels, the contiguous dimension the long one.

Training forward, after the convolution has written y:

1. `_batch_norm_statistics`: each program streams its share of the (n, pixel-block) chunks of a
   block of channels and keeps, per lane, a count, mean and sum of squared deviations (Welford),
   merged across lanes at the end (Chan et al.) into one partial per (share, channel): a mean far
   from zero costs no precision, unlike sums of values and squares;
2. `_batch_norm_finalize` merges the partials per channel and writes the mean, the unbiased
   variance, 1/σ and the affine scale and shift;
3. `_scale_shift_relu` writes max(y·scale + shift, 0) and, last of the forward pass, updates
   the running statistics, so that a forward pass that fails leaves them as they were.

The backward kernels are in `triton_batch_norm_backward`.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl

from gentool.kernels.launches import launch

TILE = 2048  # elements per program and pass
ELEMENTS_PER_THREAD = 8  # of a tile, per pass: loads enough in flight, few enough registers
MAX_WARPS = 8
PIXEL_BLOCK = 256  # pixels of an NCHW tile: 1 KiB contiguous per channel in float32
# The streaming kernels cut the chunks of each channel block into shares: enough programs to fill
# a large GPU, each long enough to stream. Fixed by shape alone, so the summation order is too.
TARGET_PROGRAMS = 1024
MAX_SHARES = 128
MIN_SHARE_ELEMENTS = 8192
CHANNELS_LAST_BLOCK = 64  # channels of a channels-last tile: 256 contiguous bytes of float32
FINALIZE_BLOCK_PARTIALS = 64
FINALIZE_BLOCK_CHANNELS = 8


@triton.jit(do_not_specialize=["pixel_blocks", "chunks", "shares"])
def _batch_norm_statistics(
    y_ptr,
    count_ptr,
    mean_ptr,
    m2_ptr,
    channels,
    pixels,
    pixel_blocks,
    chunks,
    shares,
    stride_n,
    stride_c,
    stride_p,
    BLOCK_P: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    channel = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    share = tl.program_id(1)
    count = tl.zeros((BLOCK_P, BLOCK_C), dtype=tl.float32)
    mean = tl.zeros((BLOCK_P, BLOCK_C), dtype=tl.float32)
    m2 = tl.zeros((BLOCK_P, BLOCK_C), dtype=tl.float32)
    for first in range(0, chunks, shares):  # this program's chunks: share, share + shares, …
        image, pixel, ok = chunk_tile(
            first + share, chunks, channel, channels, pixels, pixel_blocks, BLOCK_P
        )
        offset = tile_offsets(image, pixel, channel, stride_n, stride_c, stride_p)
        y = tl.load(y_ptr + offset, mask=ok, other=0.0).to(tl.float32)
        count += ok.to(tl.float32)
        delta = y - mean
        mean += tl.where(ok, delta / tl.maximum(count, 1.0), 0.0)
        m2 += tl.where(ok, delta * (y - mean), 0.0)
    # Chan et al.: the lanes' (count, mean, m2) merged at once, per channel.
    total = tl.sum(count, axis=0)
    merged_mean = tl.sum(count * mean, axis=0) / tl.maximum(total, 1.0)
    spread = mean - merged_mean[None, :]
    merged_m2 = tl.sum(m2 + count * spread * spread, axis=0)
    partial = share * channels + channel
    channel_ok = channel < channels
    tl.store(count_ptr + partial, total, mask=channel_ok)
    tl.store(mean_ptr + partial, merged_mean, mask=channel_ok)
    tl.store(m2_ptr + partial, merged_m2, mask=channel_ok)


@triton.jit
def chunk_tile(chunk, chunks, channel, channels, pixels, pixel_blocks, BLOCK_P: tl.constexpr):
    """A chunk's image, its BLOCK_P pixels and the mask of its (pixel, channel) tile; all masked
    for a chunk past the last."""
    image = chunk // pixel_blocks
    pixel = (chunk % pixel_blocks) * BLOCK_P + tl.arange(0, BLOCK_P)
    pixel_limit = tl.where(chunk < chunks, pixels, 0)
    ok = (pixel[:, None] < pixel_limit) & (channel[None, :] < channels)
    return image, pixel, ok


@triton.jit
def tile_offsets(image, pixel, channel, stride_n, stride_c, stride_p):
    """Offsets of a chunk's (pixel, channel) tile in a tensor of these strides."""
    return image * stride_n + pixel[:, None] * stride_p + channel[None, :] * stride_c


@triton.jit(do_not_specialize=["partials", "columns_per_channel"])
def _batch_norm_finalize(
    count_ptr,
    mean_ptr,
    m2_ptr,
    gamma_ptr,
    beta_ptr,
    batch_mean_ptr,
    unbiased_var_ptr,
    invstd_ptr,
    scale_ptr,
    shift_ptr,
    partials,
    columns_per_channel,
    channels,
    eps,
    BLOCK_P: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    """Partials are (partials, columns_per_channel · channels), channel = column % channels.
    Writes the batch mean, its unbiased variance (for the running statistics), 1/σ, and the
    affine scale and shift."""
    channel = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    channel_ok = channel < channels
    total = tl.zeros((BLOCK_C,), dtype=tl.float32)
    mean = tl.zeros((BLOCK_C,), dtype=tl.float32)
    m2 = tl.zeros((BLOCK_C,), dtype=tl.float32)
    entries = partials * columns_per_channel  # a channel's partials: rows × its columns
    columns = columns_per_channel * channels
    for start in range(0, entries, BLOCK_P):
        entry = start + tl.arange(0, BLOCK_P)
        column = (entry % columns_per_channel)[:, None] * channels + channel[None, :]
        offset = (entry // columns_per_channel)[:, None] * columns + column
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
    unbiased = m2 / tl.maximum(total - 1.0, 1.0)
    tl.store(unbiased_var_ptr + channel, unbiased, mask=channel_ok)


@triton.jit(do_not_specialize=["pixel_blocks"])
def _scale_shift_relu(
    y_ptr,
    scale_ptr,
    shift_ptr,
    out_ptr,
    batch_mean_ptr,
    unbiased_var_ptr,
    running_mean_ptr,
    running_var_ptr,
    momentum,
    channels,
    pixels,
    pixel_blocks,
    y_stride_n,
    y_stride_c,
    y_stride_p,
    out_stride_n,
    out_stride_c,
    out_stride_p,
    UPDATE_RUNNING: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    """max(y·scale + shift, 0); in training also the running statistics' update, here in the
    forward pass's last kernel so that a forward that fails leaves them as they were."""
    chunk = tl.program_id(0)
    channel = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    channel_ok = channel < channels
    image, pixel, ok = chunk_tile(
        chunk, chunk + 1, channel, channels, pixels, pixel_blocks, BLOCK_P
    )
    y_offset = tile_offsets(image, pixel, channel, y_stride_n, y_stride_c, y_stride_p)
    out_offset = tile_offsets(image, pixel, channel, out_stride_n, out_stride_c, out_stride_p)
    scale = tl.load(scale_ptr + channel, mask=channel_ok, other=0.0)
    shift = tl.load(shift_ptr + channel, mask=channel_ok, other=0.0)
    y = tl.load(y_ptr + y_offset, mask=ok, other=0.0).to(tl.float32)
    out = tl.maximum(y * scale[None, :] + shift[None, :], 0.0)
    tl.store(out_ptr + out_offset, out.to(out_ptr.dtype.element_ty), mask=ok)
    if UPDATE_RUNNING:
        # BatchNorm2d's update, by the programs of the first chunk (each channel once): the
        # unbiased batch variance, weighted by momentum.
        update = channel < tl.where(chunk == 0, channels, 0)
        batch_mean = tl.load(batch_mean_ptr + channel, mask=update, other=0.0)
        unbiased = tl.load(unbiased_var_ptr + channel, mask=update, other=0.0)
        running_mean = tl.load(running_mean_ptr + channel, mask=update, other=0.0)
        running_var = tl.load(running_var_ptr + channel, mask=update, other=0.0)
        new_mean = (1.0 - momentum) * running_mean.to(tl.float32) + momentum * batch_mean
        new_var = (1.0 - momentum) * running_var.to(tl.float32) + momentum * unbiased
        tl.store(running_mean_ptr + channel, new_mean.to(running_mean.dtype), mask=update)
        tl.store(running_var_ptr + channel, new_var.to(running_var.dtype), mask=update)


# --- launchers ------------------------------------------------------------------------------------


class BatchStatistics(NamedTuple):
    """Per channel, float32: what the normalisation and its backward pass use."""

    mean: torch.Tensor
    unbiased_var: torch.Tensor
    invstd: torch.Tensor
    scale: torch.Tensor  # γ/σ
    shift: torch.Tensor  # β − mean·γ/σ


def pixel_strides(tensor: torch.Tensor) -> tuple[int, int, int] | None:
    """(stride_n, stride_c, stride_p) of an (N, C, H, W) tensor whose H·W pixels lie one stride
    apart (NCHW and channels-last do), else None."""
    _, _, height, width = tensor.shape
    stride_n, stride_c, stride_h, stride_w = tensor.stride()
    if width == 1:
        return stride_n, stride_c, stride_h if height > 1 else 1
    if height == 1 or stride_h == width * stride_w:
        return stride_n, stride_c, stride_w
    return None


def tile_for(tensor: torch.Tensor) -> tuple[int, int, int, int, int]:
    """(BLOCK_P, BLOCK_C, pixel blocks, chunks, warps): a tile long along the contiguous
    dimension, with ELEMENTS_PER_THREAD elements for each thread of its warps."""
    batch, channels, height, width = tensor.shape
    pixels = height * width
    channels_contiguous = tensor.stride(1) == 1 and channels > 1
    if channels_contiguous:
        block_c = min(triton.next_power_of_2(channels), CHANNELS_LAST_BLOCK)
        block_p = max(1, min(triton.next_power_of_2(pixels), TILE // block_c))
    else:
        block_p = min(triton.next_power_of_2(pixels), PIXEL_BLOCK)
        block_c = max(1, min(triton.next_power_of_2(channels), TILE // block_p))
    pixel_blocks = triton.cdiv(pixels, block_p)
    warps = max(1, min(MAX_WARPS, block_p * block_c // (ELEMENTS_PER_THREAD * 32)))
    return block_p, block_c, pixel_blocks, batch * pixel_blocks, warps


def shares_for(channel_blocks: int, chunks: int, tile: int) -> int:
    """How many programs share a block of channels' chunks: TARGET_PROGRAMS in all, each with
    MIN_SHARE_ELEMENTS or more to stream."""
    by_work = chunks * tile // MIN_SHARE_ELEMENTS
    return max(1, min(MAX_SHARES, TARGET_PROGRAMS // channel_blocks, by_work))


def statistics(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per (share, channel) partial count, mean and sum of squared deviations of y, float32."""
    channels = y.shape[1]
    block_p, block_c, pixel_blocks, chunks, warps = tile_for(y)
    channel_blocks = triton.cdiv(channels, block_c)
    shares = shares_for(channel_blocks, chunks, block_p * block_c)
    count, mean, m2 = (
        torch.empty((shares, channels), dtype=torch.float32, device=y.device) for _ in range(3)
    )
    launch(
        _batch_norm_statistics,
        (channel_blocks, shares),
        y,
        count,
        mean,
        m2,
        channels,
        y.shape[2] * y.shape[3],
        pixel_blocks,
        chunks,
        shares,
        *pixel_strides(y),
        BLOCK_P=block_p,
        BLOCK_C=block_c,
        num_warps=warps,
    )
    return count, mean, m2


def finalize(
    partials: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    channels: int,
    gamma: torch.Tensor,
    beta: torch.Tensor,
    eps: float,
) -> BatchStatistics:
    """The batch statistics from partials (rows, k·channels), channel = column % channels."""
    count, mean, m2 = partials
    statistics = BatchStatistics(
        *(torch.empty(channels, dtype=torch.float32, device=count.device) for _ in range(5))
    )
    launch(
        _batch_norm_finalize,
        (triton.cdiv(channels, FINALIZE_BLOCK_CHANNELS),),
        count,
        mean,
        m2,
        gamma,
        beta,
        statistics.mean,
        statistics.unbiased_var,
        statistics.invstd,
        statistics.scale,
        statistics.shift,
        count.shape[0],
        count.shape[1] // channels,
        channels,
        eps,
        BLOCK_P=FINALIZE_BLOCK_PARTIALS,
        BLOCK_C=FINALIZE_BLOCK_CHANNELS,
    )
    return statistics


def scale_shift_relu(
    y: torch.Tensor,
    scale: torch.Tensor,
    shift: torch.Tensor,
    out: torch.Tensor,
    *,
    running: tuple[torch.Tensor, torch.Tensor, float] | None = None,
    statistics: BatchStatistics | None = None,
) -> torch.Tensor:
    """max(y·scale + shift, 0) per channel, written into `out` (any layout `pixel_strides`
    takes); with `running` = (running mean, running variance, momentum), also their update
    from `statistics`."""
    channels = y.shape[1]
    block_p, block_c, pixel_blocks, chunks, warps = tile_for(y)
    running_mean, running_var, momentum = running or (scale, scale, 0.0)
    mean, unbiased_var = (scale, scale) if statistics is None else statistics[:2]
    launch(
        _scale_shift_relu,
        (chunks, triton.cdiv(channels, block_c)),
        y,
        scale,
        shift,
        out,
        mean,
        unbiased_var,
        running_mean,
        running_var,
        float(momentum),
        channels,
        y.shape[2] * y.shape[3],
        pixel_blocks,
        *pixel_strides(y),
        *pixel_strides(out),
        UPDATE_RUNNING=running is not None,
        BLOCK_P=block_p,
        BLOCK_C=block_c,
        num_warps=warps,
    )
    return out


def normalize_training(
    y: torch.Tensor,
    partials: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    gamma: torch.Tensor,
    beta: torch.Tensor,
    running_mean: torch.Tensor | None,
    running_var: torch.Tensor | None,
    momentum: float,
    eps: float,
    out: torch.Tensor,
) -> BatchStatistics:
    """out = relu(batch_norm(y)) by y's batch statistics, from their partials; the running
    statistics, when given, updated as BatchNorm2d does."""
    statistics = finalize(partials, y.shape[1], gamma, beta, eps)
    running = None if running_mean is None else (running_mean, running_var, momentum)
    scale_shift_relu(
        y, statistics.scale, statistics.shift, out, running=running, statistics=statistics
    )
    return statistics
