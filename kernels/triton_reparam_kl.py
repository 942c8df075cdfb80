"""Triton kernels of `reparameterize_kl`; imported only when the Triton backend runs.

Tensors are viewed as (rows, cols) = (batch, latent) in row-major order, and each program takes a
BLOCK_ROWS × BLOCK_COLS tile. ε is drawn in-kernel by Philox from (seed, counter), so the backward
kernel regenerates exactly the forward's ε and nothing ε-sized is ever stored: the forward reads μ
and log σ² once and writes z once (3 tensors of traffic), the backward reads μ, log σ² and dz and
writes dμ and dlog σ² (5 tensors).

One Philox call gives four normals (`tl.randn4x`: two Box–Muller pairs), so a tile is drawn as
four quarters of its columns, the j-th normal of counter (row, column block, q) going to column
j·BLOCK_COLS/4 + q of that block. Each quarter is a contiguous run of columns (loads and stores
stay coalesced), and a program spends a quarter of the Philox rounds a normal drawn per element
would. ε depends on the tile, which depends only on the shape, so forward and backward agree.

Tiles are sized so that small latents still start a program or more per SM, and large ones keep
eight elements per thread: enough loads in flight, few enough registers for full occupancy.

The per-sample KL is summed deterministically: each program writes one partial sum per row of its
tile, and the caller adds the partials of a row in a fixed order (no float atomics).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from gentool.kernels.launches import launch

LARGEST_TILE = 1024  # elements: eight per thread of four warps
SMALLEST_TILE = 128  # elements: four per thread of one warp
PROGRAMS_TO_FILL = 264  # two per SM of an H100, the largest card the tiles are sized for
ELEMENTS_PER_WARP = 256


@triton.jit(do_not_specialize=["seed", "col_blocks"])
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
    QUARTER: tl.constexpr = BLOCK_COLS // 4
    row = tl.program_id(0) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    col = tl.program_id(1) * BLOCK_COLS + tl.arange(0, QUARTER)
    counter = (row[:, None] * col_blocks + tl.program_id(1)) * QUARTER + tl.arange(0, QUARTER)
    if not HAS_EPS:
        noise_0, noise_1, noise_2, noise_3 = tl.randn4x(seed, counter)
    kl = tl.zeros((BLOCK_ROWS,), dtype=tl.float32)
    for quarter in tl.static_range(4):
        quarter_col = col + quarter * QUARTER
        mask = (row[:, None] < rows) & (quarter_col[None, :] < cols)
        index = row[:, None] * cols + quarter_col[None, :]  # (BLOCK_ROWS, QUARTER)
        mu = tl.load(mu_ptr + index, mask=mask, other=0.0).to(tl.float32)
        logvar = tl.load(logvar_ptr + index, mask=mask, other=0.0).to(tl.float32)
        if HAS_EPS:
            eps = tl.load(eps_ptr + index, mask=mask, other=0.0).to(tl.float32)
        else:
            eps = _pick(quarter, noise_0, noise_1, noise_2, noise_3)
        std = tl.exp(0.5 * logvar)
        tl.store(z_ptr + index, (mu + std * eps).to(z_ptr.dtype.element_ty), mask=mask)
        # KL(N(μ, σ²) ‖ N(0, 1)) per element; masked lanes (μ = 0, log σ² = 0) contribute 0.
        kl += tl.sum(tl.where(mask, 0.5 * (mu * mu + std * std - 1.0 - logvar), 0.0), axis=1)
    tl.store(partial_ptr + row * col_blocks + tl.program_id(1), kl, mask=row < rows)


@triton.jit(do_not_specialize=["seed", "col_blocks"])
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
    col_blocks,
    HAS_EPS: tl.constexpr,
    HAS_DZ: tl.constexpr,
    HAS_DKL: tl.constexpr,
    BLOCK_ROWS: tl.constexpr,
    BLOCK_COLS: tl.constexpr,
):
    QUARTER: tl.constexpr = BLOCK_COLS // 4
    row = tl.program_id(0) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    col = tl.program_id(1) * BLOCK_COLS + tl.arange(0, QUARTER)
    counter = (row[:, None] * col_blocks + tl.program_id(1)) * QUARTER + tl.arange(0, QUARTER)
    if HAS_DZ and not HAS_EPS:
        noise_0, noise_1, noise_2, noise_3 = tl.randn4x(seed, counter)
    if HAS_DKL:
        dkl = tl.load(dkl_ptr + row, mask=row < rows, other=0.0).to(tl.float32)[:, None]
    for quarter in tl.static_range(4):
        quarter_col = col + quarter * QUARTER
        mask = (row[:, None] < rows) & (quarter_col[None, :] < cols)
        index = row[:, None] * cols + quarter_col[None, :]
        logvar = tl.load(logvar_ptr + index, mask=mask, other=0.0).to(tl.float32)
        std = tl.exp(0.5 * logvar)
        dmu = tl.zeros((BLOCK_ROWS, QUARTER), dtype=tl.float32)
        dlogvar = tl.zeros((BLOCK_ROWS, QUARTER), dtype=tl.float32)
        if HAS_DZ:
            # z = μ + exp(½ log σ²)·ε  ⇒  ∂z/∂μ = 1, ∂z/∂log σ² = ½·σ·ε
            dz = tl.load(dz_ptr + index, mask=mask, other=0.0).to(tl.float32)
            if HAS_EPS:
                eps = tl.load(eps_ptr + index, mask=mask, other=0.0).to(tl.float32)
            else:
                eps = _pick(quarter, noise_0, noise_1, noise_2, noise_3)
            dmu += dz
            dlogvar += dz * 0.5 * std * eps
        if HAS_DKL:
            # KL = ½(μ² + σ² − 1 − log σ²)  ⇒  ∂KL/∂μ = μ, ∂KL/∂log σ² = ½(σ² − 1)
            mu = tl.load(mu_ptr + index, mask=mask, other=0.0).to(tl.float32)
            dmu += dkl * mu
            dlogvar += dkl * 0.5 * (std * std - 1.0)
        tl.store(dmu_ptr + index, dmu.to(dmu_ptr.dtype.element_ty), mask=mask)
        tl.store(dlogvar_ptr + index, dlogvar.to(dlogvar_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _pick(quarter: tl.constexpr, noise_0, noise_1, noise_2, noise_3):
    """The quarter-th of the four normals (a choice made while compiling; Triton has no dict)."""
    if quarter == 0:  # noqa: SIM116
        return noise_0
    elif quarter == 1:
        return noise_1
    elif quarter == 2:
        return noise_2
    else:
        return noise_3


def tiling(rows: int, cols: int) -> tuple[int, int, int, tuple[int, int]]:
    """(BLOCK_ROWS, BLOCK_COLS, warps, grid): tiles of SMALLEST_TILE to LARGEST_TILE elements,
    the largest that still gives PROGRAMS_TO_FILL programs; wide rows get a tile row each."""
    elements = rows * cols
    tile = SMALLEST_TILE
    while tile < LARGEST_TILE and elements >= 2 * tile * PROGRAMS_TO_FILL:
        tile *= 2
    block_cols = max(4, min(triton.next_power_of_2(cols), tile))
    block_rows = max(1, min(triton.next_power_of_2(rows), tile // block_cols))
    warps = max(1, min(4, block_rows * block_cols // ELEMENTS_PER_WARP))
    grid = (triton.cdiv(rows, block_rows), triton.cdiv(cols, block_cols))
    return block_rows, block_cols, warps, grid


def forward(
    mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor | None, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """z (rows, cols) in the input dtype and the per-row KL (rows,) in float32."""
    rows, cols = mu.shape
    block_rows, block_cols, warps, grid = tiling(rows, cols)
    z = torch.empty_like(mu)
    partials = torch.empty((rows, grid[1]), dtype=torch.float32, device=mu.device)
    launch(
        _reparam_kl_forward,
        grid,
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
        num_warps=warps,
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
    block_rows, block_cols, warps, grid = tiling(rows, cols)
    dmu = torch.empty_like(mu)
    dlogvar = torch.empty_like(logvar)
    launch(
        _reparam_kl_backward,
        grid,
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
        grid[1],
        HAS_EPS=eps is not None,
        HAS_DZ=dz is not None,
        HAS_DKL=dkl is not None,
        BLOCK_ROWS=block_rows,
        BLOCK_COLS=block_cols,
        num_warps=warps,
    )
    return dmu, dlogvar
