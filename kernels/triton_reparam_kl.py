"""Triton kernels of `reparameterize_kl`; imported only when the Triton backend runs.

Tensors are viewed as (rows, cols) = (batch, latent) in row-major order. Each program handles a
BLOCK_ROWS × BLOCK_COLS tile. ε is drawn in-kernel by Philox from (seed, element index), so the
backward kernel regenerates exactly the forward's ε and nothing ε-sized is ever stored: the forward
reads μ and log σ² once and writes z once (3 tensors of traffic), the backward reads μ, log σ²
and dz and writes dμ and dlog σ² (5 tensors).

The per-sample KL is summed deterministically: each program writes one partial sum per row of its
tile, and the caller adds the partials of a row in a fixed order (no float atomics).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

MAX_TILE = 4096  # elements per program: large enough to stream, small enough to stay in registers
MAX_BLOCK_COLS = 1024


@triton.jit
def _reparam_kl_forward(
    mu_ptr,
    logvar_ptr,
    eps_ptr,
    z_ptr,
    partial_ptr,
    seed,
    rows,
    cols,
    col_blocks,
    HAS_EPS: tl.constexpr,
    BLOCK_ROWS: tl.constexpr,
    BLOCK_COLS: tl.constexpr,
):
    row = tl.program_id(0) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    col = tl.program_id(1) * BLOCK_COLS + tl.arange(0, BLOCK_COLS)
    mask = (row[:, None] < rows) & (col[None, :] < cols)
    index = row[:, None] * cols + col[None, :]  # (BLOCK_ROWS, BLOCK_COLS) element indexes
    mu = tl.load(mu_ptr + index, mask=mask, other=0.0).to(tl.float32)
    logvar = tl.load(logvar_ptr + index, mask=mask, other=0.0).to(tl.float32)
    if HAS_EPS:
        eps = tl.load(eps_ptr + index, mask=mask, other=0.0).to(tl.float32)
    else:
        eps = tl.randn(seed, index)
    std = tl.exp(0.5 * logvar)
    tl.store(z_ptr + index, (mu + std * eps).to(z_ptr.dtype.element_ty), mask=mask)
    # KL(N(μ, σ²) ‖ N(0, 1)) per element; masked lanes (μ = 0, log σ² = 0) contribute exactly 0.
    kl = 0.5 * (mu * mu + std * std - 1.0 - logvar)
    kl = tl.where(mask, kl, 0.0)
    tl.store(partial_ptr + row * col_blocks + tl.program_id(1), tl.sum(kl, axis=1), mask=row < rows)


@triton.jit
def _reparam_kl_backward(
    mu_ptr,
    logvar_ptr,
    eps_ptr,
    dz_ptr,
    dkl_ptr,
    dmu_ptr,
    dlogvar_ptr,
    seed,
    rows,
    cols,
    HAS_EPS: tl.constexpr,
    HAS_DZ: tl.constexpr,
    HAS_DKL: tl.constexpr,
    BLOCK_ROWS: tl.constexpr,
    BLOCK_COLS: tl.constexpr,
):
    row = tl.program_id(0) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    col = tl.program_id(1) * BLOCK_COLS + tl.arange(0, BLOCK_COLS)
    mask = (row[:, None] < rows) & (col[None, :] < cols)
    index = row[:, None] * cols + col[None, :]
    mu = tl.load(mu_ptr + index, mask=mask, other=0.0).to(tl.float32)
    logvar = tl.load(logvar_ptr + index, mask=mask, other=0.0).to(tl.float32)
    std = tl.exp(0.5 * logvar)
    dmu = tl.zeros((BLOCK_ROWS, BLOCK_COLS), dtype=tl.float32)
    dlogvar = tl.zeros((BLOCK_ROWS, BLOCK_COLS), dtype=tl.float32)
    if HAS_DZ:
        # z = μ + exp(½ log σ²)·ε  ⇒  ∂z/∂μ = 1, ∂z/∂log σ² = ½·σ·ε
        dz = tl.load(dz_ptr + index, mask=mask, other=0.0).to(tl.float32)
        if HAS_EPS:
            eps = tl.load(eps_ptr + index, mask=mask, other=0.0).to(tl.float32)
        else:
            eps = tl.randn(seed, index)
        dmu += dz
        dlogvar += dz * 0.5 * std * eps
    if HAS_DKL:
        # KL = ½(μ² + σ² − 1 − log σ²)  ⇒  ∂KL/∂μ = μ, ∂KL/∂log σ² = ½(σ² − 1)
        dkl = tl.load(dkl_ptr + row, mask=row < rows, other=0.0).to(tl.float32)[:, None]
        dmu += dkl * mu
        dlogvar += dkl * 0.5 * (std * std - 1.0)
    tl.store(dmu_ptr + index, dmu.to(dmu_ptr.dtype.element_ty), mask=mask)
    tl.store(dlogvar_ptr + index, dlogvar.to(dlogvar_ptr.dtype.element_ty), mask=mask)


def _tile(rows: int, cols: int) -> tuple[int, int, tuple[int, int]]:
    """Tile sizes and grid: wide rows get a row each, narrow rows are stacked into one tile."""
    block_cols = min(triton.next_power_of_2(cols), MAX_BLOCK_COLS)
    block_rows = min(triton.next_power_of_2(rows), max(1, MAX_TILE // block_cols))
    grid = (triton.cdiv(rows, block_rows), triton.cdiv(cols, block_cols))
    return block_rows, block_cols, grid


def forward(
    mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor | None, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """z (rows, cols) in the input dtype and the per-row KL (rows,) in float32."""
    rows, cols = mu.shape
    block_rows, block_cols, grid = _tile(rows, cols)
    z = torch.empty_like(mu)
    partials = torch.empty((rows, grid[1]), dtype=torch.float32, device=mu.device)
    _reparam_kl_forward[grid](
        mu,
        logvar,
        mu if eps is None else eps,  # never read without HAS_EPS; any pointer will do
        z,
        partials,
        seed,
        rows,
        cols,
        grid[1],
        HAS_EPS=eps is not None,
        BLOCK_ROWS=block_rows,
        BLOCK_COLS=block_cols,
    )
    return z, partials.sum(dim=1)


def backward(
    mu: torch.Tensor,
    logvar: torch.Tensor,
    eps: torch.Tensor | None,
    seed: int,
    dz: torch.Tensor | None,
    dkl: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """dμ and dlog σ² (rows, cols) in the input dtype."""
    rows, cols = mu.shape
    block_rows, block_cols, grid = _tile(rows, cols)
    dmu = torch.empty_like(mu)
    dlogvar = torch.empty_like(logvar)
    _reparam_kl_backward[grid](
        mu,
        logvar,
        mu if eps is None else eps,
        mu if dz is None else dz,
        mu if dkl is None else dkl,
        dmu,
        dlogvar,
        seed,
        rows,
        cols,
        HAS_EPS=eps is not None,
        HAS_DZ=dz is not None,
        HAS_DKL=dkl is not None,
        BLOCK_ROWS=block_rows,
        BLOCK_COLS=block_cols,
    )
    return dmu, dlogvar
