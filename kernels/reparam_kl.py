"""Reparameterised sampling with its KL term, as one fused op (Kingma & Welling, arXiv:1312.6114).

    z  = μ + exp(½·log σ²)·ε,  ε ~ N(0, I)
    KL = ½ Σ (μ² + σ² − 1 − log σ²)  = KL(N(μ, σ²) ‖ N(0, I)), per sample

The first dimension is the batch; the others are flattened into the latent. The PyTorch
implementation below is the reference and runs wherever Triton does not; the Triton kernels
(`triton_reparam_kl`) draw ε in-kernel and regenerate it in the backward pass, so ε is never stored.
`kernels/dispatch.py` picks the backend.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

from gentool.kernels.dispatch import choose_backend, requested_backend, run_with_fallback

Reduction = Literal["none", "sum", "mean"]
REDUCTIONS = ("none", "sum", "mean")
MAX_ELEMENTS = 2**31 - 1  # element indexes and Philox offsets are int32 in the kernels
SEED_RANGE = 2**31 - 1


def reparameterize_kl(
    mu: torch.Tensor,
    logvar: torch.Tensor,
    *,
    eps: torch.Tensor | None = None,
    seed: int | None = None,
    reduction: Reduction = "none",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample z = μ + σ·ε and compute KL(N(μ, σ²) ‖ N(0, I)) in one pass.

    Args:
        mu, logvar: (B, ...) means and log-variances of the same shape, dtype and device.
        eps: the noise to use instead of drawing it (every backend then gives the same z).
        seed: seeds the noise; when None it is drawn from torch's default generator, so
            `torch.manual_seed` makes runs repeatable.
        reduction: "none" for the per-sample KL (B,), "sum" or "mean" over the batch.

    Returns:
        z with the shape and dtype of `mu`, and the KL in float32 (float64 for float64 inputs).
    """
    _check_inputs(mu, logvar, eps, reduction)
    if mu.numel() and choose_backend("reparameterize_kl", mu) == "triton":
        if seed is None:
            seed = int(torch.randint(SEED_RANGE, (1,)).item())
        z, kl = run_with_fallback(
            "reparameterize_kl",
            lambda: _FusedReparameterizeKL.apply(mu, logvar, eps, seed),
            lambda: reparameterize_kl_reference(mu, logvar, eps=eps, seed=seed),
        )
    else:
        z, kl = reparameterize_kl_reference(mu, logvar, eps=eps, seed=seed)
    if reduction == "sum":
        return z, kl.sum()
    if reduction == "mean":
        return z, kl.mean()
    return z, kl


def reparameterize_kl_reference(
    mu: torch.Tensor,
    logvar: torch.Tensor,
    *,
    eps: torch.Tensor | None = None,
    seed: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The PyTorch implementation: plain differentiable ops, computed in float32 (or float64)."""
    compute = torch.float64 if mu.dtype == torch.float64 else torch.float32
    if eps is None:
        generator = None if seed is None else torch.Generator(mu.device).manual_seed(seed)
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=compute)
    mu_c, logvar_c = mu.to(compute), logvar.to(compute)
    z = mu_c + torch.exp(0.5 * logvar_c) * eps.to(compute)
    kl = 0.5 * (mu_c.square() + logvar_c.exp() - 1.0 - logvar_c)
    return z.to(mu.dtype), kl.reshape(mu.shape[0], math.prod(mu.shape[1:])).sum(dim=1)


class _FusedReparameterizeKL(torch.autograd.Function):
    """The Triton path: saves μ, log σ² (the caller's own tensors when contiguous) and the seed."""

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        mu: torch.Tensor,
        logvar: torch.Tensor,
        eps: torch.Tensor | None,
        seed: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        from gentool.kernels import triton_reparam_kl

        shape = mu.shape
        flat = (shape[0], math.prod(shape[1:]))  # (B, latent)
        mu_2d = mu.reshape(flat).contiguous()
        logvar_2d = logvar.reshape(flat).contiguous()
        eps_2d = None if eps is None else eps.reshape(flat).contiguous()
        z, kl = triton_reparam_kl.forward(mu_2d, logvar_2d, eps_2d, seed)
        ctx.save_for_backward(mu_2d, logvar_2d, eps_2d)
        ctx.seed = seed
        ctx.shape = shape
        ctx.backend = requested_backend()
        ctx.set_materialize_grads(False)  # a missing gradient skips its part of the backward
        return z.view(shape), kl

    @staticmethod
    def backward(
        ctx: torch.autograd.function.FunctionCtx,
        grad_z: torch.Tensor | None,
        grad_kl: torch.Tensor | None,
    ) -> tuple[torch.Tensor | None, ...]:
        from gentool.kernels import triton_reparam_kl

        mu_2d, logvar_2d, eps_2d = ctx.saved_tensors
        if grad_z is None and grad_kl is None:
            return None, None, None, None
        dz = None if grad_z is None else grad_z.reshape(mu_2d.shape).contiguous()
        dkl = None if grad_kl is None else grad_kl.contiguous()
        dmu, dlogvar = run_with_fallback(
            "reparameterize_kl",
            lambda: triton_reparam_kl.backward(mu_2d, logvar_2d, eps_2d, ctx.seed, dz, dkl),
            lambda: _backward_in_pytorch(mu_2d, logvar_2d, eps_2d, ctx.seed, dz, dkl),
            requested=ctx.backend,
        )
        return dmu.view(ctx.shape), dlogvar.view(ctx.shape), None, None


def _backward_in_pytorch(
    mu: torch.Tensor,
    logvar: torch.Tensor,
    eps: torch.Tensor | None,
    seed: int,
    dz: torch.Tensor | None,
    dkl: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The backward pass where its kernel failed: ε is the forward kernel's (which ran) own z at
    μ = 0, log σ² = 0, in the inputs' dtype."""
    from gentool.kernels import triton_reparam_kl

    mu_c, logvar_c = mu.float(), logvar.float()
    std = torch.exp(0.5 * logvar_c)
    dmu, dlogvar = torch.zeros_like(mu_c), torch.zeros_like(logvar_c)
    if dz is not None:
        zeros = torch.zeros_like(mu)
        noise = eps if eps is not None else triton_reparam_kl.forward(zeros, zeros, None, seed)[0]
        dmu += dz.float()
        dlogvar += dz.float() * 0.5 * std * noise.float()
    if dkl is not None:
        dmu += dkl.float()[:, None] * mu_c
        dlogvar += dkl.float()[:, None] * 0.5 * (std * std - 1.0)
    return dmu.to(mu.dtype), dlogvar.to(logvar.dtype)


def probe_reparameterize_kl(device: torch.device, dtype: torch.dtype) -> None:
    """Run the Triton kernels once on small inputs (see `gentool.kernels.preflight`)."""
    generator = torch.Generator().manual_seed(0)
    mu, logvar = (torch.randn(4, 8, generator=generator).to(device, dtype) for _ in range(2))
    mu.requires_grad_(True)
    logvar.requires_grad_(True)
    z, kl = _FusedReparameterizeKL.apply(mu, logvar, None, 0)
    torch.autograd.backward((z, kl), (torch.ones_like(z), torch.ones_like(kl)))


def _check_inputs(
    mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor | None, reduction: str
) -> None:
    if mu.ndim < 1 or mu.shape != logvar.shape:
        raise ValueError(
            f"mu and logvar must have one shape (B, ...); got {tuple(mu.shape)} and "
            f"{tuple(logvar.shape)}"
        )
    if mu.dtype != logvar.dtype or not mu.is_floating_point():
        raise ValueError(f"mu and logvar must share a float dtype; got {mu.dtype}, {logvar.dtype}")
    if mu.device != logvar.device:
        raise ValueError(f"mu is on {mu.device} but logvar is on {logvar.device}")
    if eps is not None and (eps.shape != mu.shape or eps.device != mu.device):
        raise ValueError(
            f"eps must match mu: shape {tuple(mu.shape)} on {mu.device}; got "
            f"{tuple(eps.shape)} on {eps.device}"
        )
    if mu.numel() > MAX_ELEMENTS:
        raise ValueError(f"reparameterize_kl takes at most {MAX_ELEMENTS} elements")
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {', '.join(REDUCTIONS)}; got {reduction!r}")
