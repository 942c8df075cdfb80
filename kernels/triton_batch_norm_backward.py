"""Triton kernels for the backward pass of BatchNorm + ReLU after a convolution.

`_batch_norm_relu_grad_partials` sums Σ g, Σ g·x̂ and Σ x̂ (g the gradient through the ReLU mask,
recomputed from y) per (share, channel), and `_batch_norm_relu_grad_input` adds the shares in a
fixed order and writes dy and (once) dγ, dβ: no float atomics, so results are deterministic.
Only y is kept from the forward pass; the ReLU mask and x̂ are recomputed from it. Tensors are
taken with their own strides and tiled as in `triton_batch_norm`, whose forward kernels these
follow; the output gradient may have another layout than y.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from gentool.kernels.launches import launch
from gentool.kernels.triton_batch_norm import (
    chunk_tile,
    pixel_strides,
    shares_for,
    tile_for,
    tile_offsets,
)

SHARE_STEP = tl.constexpr(32)  # shares' partial sums loaded at a time by the second kernel


@triton.jit(do_not_specialize=["pixel_blocks", "chunks", "shares"])
def _batch_norm_relu_grad_partials(
    grad_out_ptr,
    y_ptr,
    mean_ptr,
    invstd_ptr,
    scale_ptr,
    shift_ptr,
    partial_ptr,
    channels,
    pixels,
    pixel_blocks,
    chunks,
    shares,
    y_stride_n,
    y_stride_c,
    y_stride_p,
    grad_stride_n,
    grad_stride_c,
    grad_stride_p,
    BLOCK_P: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    """Per (share, channel): Σ g, Σ g·x̂ and Σ x̂, at partial_ptr[0 | 1 | 2, share, channel]."""
    channel = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    share = tl.program_id(1)
    channel_ok = channel < channels
    mean, invstd, scale, shift = _normalisation_rows(
        mean_ptr, invstd_ptr, scale_ptr, shift_ptr, channel, channel_ok
    )
    sum_grad = tl.zeros((BLOCK_P, BLOCK_C), dtype=tl.float32)
    sum_grad_xhat = tl.zeros((BLOCK_P, BLOCK_C), dtype=tl.float32)
    sum_xhat = tl.zeros((BLOCK_P, BLOCK_C), dtype=tl.float32)
    for first in range(0, chunks, shares):  # this program's chunks: share, share + shares, …
        image, pixel, ok = chunk_tile(
            first + share, chunks, channel, channels, pixels, pixel_blocks, BLOCK_P
        )
        y_offset = tile_offsets(image, pixel, channel, y_stride_n, y_stride_c, y_stride_p)
        grad_offset = tile_offsets(
            image, pixel, channel, grad_stride_n, grad_stride_c, grad_stride_p
        )
        y, grad = _y_and_relu_grad(y_ptr, y_offset, grad_out_ptr, grad_offset, ok, scale, shift)
        xhat = tl.where(ok, (y - mean) * invstd, 0.0)
        sum_grad += grad
        sum_grad_xhat += grad * xhat
        sum_xhat += xhat
    index = share * channels + channel
    stride = shares * channels
    tl.store(partial_ptr + index, tl.sum(sum_grad, axis=0), mask=channel_ok)
    tl.store(partial_ptr + stride + index, tl.sum(sum_grad_xhat, axis=0), mask=channel_ok)
    tl.store(partial_ptr + 2 * stride + index, tl.sum(sum_xhat, axis=0), mask=channel_ok)


@triton.jit(do_not_specialize=["pixel_blocks", "chunks", "shares", "per_channel"])
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
    pixels,
    pixel_blocks,
    chunks,
    shares,
    per_channel,
    y_stride_n,
    y_stride_c,
    y_stride_p,
    grad_stride_n,
    grad_stride_c,
    grad_stride_p,
    BLOCK_P: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    """dy in y's layout; dγ and dβ from the programs of the first share."""
    channel = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    share = tl.program_id(1)
    channel_ok = channel < channels
    # The shares' partial sums, added in a fixed order, SHARE_STEP shares at a time.
    sum_grad = tl.zeros((BLOCK_C,), dtype=tl.float32)
    sum_grad_xhat = tl.zeros((BLOCK_C,), dtype=tl.float32)
    sum_xhat = tl.zeros((BLOCK_C,), dtype=tl.float32)
    stride = shares * channels
    for first in range(0, shares, SHARE_STEP):
        step = first + tl.arange(0, SHARE_STEP)
        index = step[:, None] * channels + channel[None, :]
        ok = (step < shares)[:, None] & channel_ok[None, :]
        sum_grad += tl.sum(tl.load(partial_ptr + index, mask=ok, other=0.0), axis=0)
        sum_grad_xhat += tl.sum(tl.load(partial_ptr + stride + index, mask=ok, other=0.0), axis=0)
        sum_xhat += tl.sum(tl.load(partial_ptr + 2 * stride + index, mask=ok, other=0.0), axis=0)
    # The float32 mean sits up to half an ulp from the true one, which leaves Σ x̂ ≠ 0 when
    # |mean| ≫ σ; centring x̂ by its own mean restores the exact-mean gradients.
    mean_xhat = sum_xhat / per_channel
    grad_gamma = sum_grad_xhat - mean_xhat * sum_grad
    first_share = channel < tl.where(share == 0, channels, 0)
    tl.store(grad_gamma_ptr + channel, grad_gamma, mask=first_share)
    tl.store(grad_beta_ptr + channel, sum_grad, mask=first_share)
    mean, invstd, scale, shift = _normalisation_rows(
        mean_ptr, invstd_ptr, scale_ptr, shift_ptr, channel, channel_ok
    )
    gamma = tl.load(gamma_ptr + channel, mask=channel_ok, other=0.0).to(tl.float32)[None, :]
    # dy = γ/σ · (g − mean(g) − x̂·mean(g·x̂)), the batch-statistics BatchNorm backward.
    mean_grad = (sum_grad / per_channel)[None, :]
    mean_grad_xhat = (grad_gamma / per_channel)[None, :]
    centre = mean_xhat[None, :]
    for first in range(0, chunks, shares):  # this program's chunks: share, share + shares, …
        image, pixel, ok = chunk_tile(
            first + share, chunks, channel, channels, pixels, pixel_blocks, BLOCK_P
        )
        y_offset = tile_offsets(image, pixel, channel, y_stride_n, y_stride_c, y_stride_p)
        grad_offset = tile_offsets(
            image, pixel, channel, grad_stride_n, grad_stride_c, grad_stride_p
        )
        y, grad = _y_and_relu_grad(y_ptr, y_offset, grad_out_ptr, grad_offset, ok, scale, shift)
        xhat = (y - mean) * invstd - centre
        grad_y = gamma * invstd * (grad - mean_grad - xhat * mean_grad_xhat)
        tl.store(grad_y_ptr + y_offset, grad_y.to(grad_y_ptr.dtype.element_ty), mask=ok)


@triton.jit
def _normalisation_rows(mean_ptr, invstd_ptr, scale_ptr, shift_ptr, channel, channel_ok):
    """The forward pass's mean, 1/σ, scale and shift of these channels, as (1, BLOCK_C) rows."""
    mean = tl.load(mean_ptr + channel, mask=channel_ok, other=0.0)[None, :]
    invstd = tl.load(invstd_ptr + channel, mask=channel_ok, other=0.0)[None, :]
    scale = tl.load(scale_ptr + channel, mask=channel_ok, other=0.0)[None, :]
    shift = tl.load(shift_ptr + channel, mask=channel_ok, other=0.0)[None, :]
    return mean, invstd, scale, shift


@triton.jit
def _y_and_relu_grad(y_ptr, y_offset, grad_out_ptr, grad_offset, ok, scale, shift):
    """y and the output gradient through the forward's ReLU, its mask recomputed from y, float32."""
    y = tl.load(y_ptr + y_offset, mask=ok, other=0.0).to(tl.float32)
    grad = tl.load(grad_out_ptr + grad_offset, mask=ok, other=0.0).to(tl.float32)
    return y, tl.where(y * scale + shift > 0.0, grad, 0.0)


def backward(
    grad_out: torch.Tensor,
    y: torch.Tensor,
    gamma: torch.Tensor,
    mean: torch.Tensor,
    invstd: torch.Tensor,
    scale: torch.Tensor,
    shift: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The gradients of y (in y's layout), of γ and of β (both float32)."""
    if pixel_strides(grad_out) is None:
        grad_out = grad_out.contiguous()
    batch, channels, height, width = y.shape
    block_p, block_c, pixel_blocks, chunks, warps = tile_for(y)
    channel_blocks = triton.cdiv(channels, block_c)
    shares = shares_for(channel_blocks, chunks, block_p * block_c)
    partials = torch.empty((3, shares, channels), dtype=torch.float32, device=y.device)
    grid = (channel_blocks, shares)
    per_channel = (mean, invstd, scale, shift)
    geometry = (channels, height * width, pixel_blocks, chunks, shares)
    strides = (*pixel_strides(y), *pixel_strides(grad_out))
    launch(
        _batch_norm_relu_grad_partials,
        grid,
        grad_out,
        y,
        *per_channel,
        partials,
        *geometry,
        *strides,
        BLOCK_P=block_p,
        BLOCK_C=block_c,
        num_warps=warps,
    )
    grad_gamma = torch.empty(channels, dtype=torch.float32, device=y.device)
    grad_beta = torch.empty_like(grad_gamma)
    grad_y = torch.empty_like(y)
    launch(
        _batch_norm_relu_grad_input,
        grid,
        grad_out,
        y,
        *per_channel,
        gamma,
        partials,
        grad_gamma,
        grad_beta,
        grad_y,
        *geometry,
        batch * height * width,
        *strides,
        BLOCK_P=block_p,
        BLOCK_C=block_c,
        num_warps=warps,
    )
    return grad_y, grad_gamma, grad_beta
