"""reparameterize_kl on every backend against a float64 reference, forward and backward.

Triton runs natively on a GPU and under TRITON_INTERPRET=1 on the CPU (see conftest.py); the
shapes stay small because each interpreted program instance costs about half a millisecond.
"""

from __future__ import annotations

import pytest
import torch

from gentool.errors import GentoolError
from gentool.kernels import reparameterize_kl, reparameterize_kl_reference
from gentool.kernels.dispatch import KernelUnavailable, choose_backend

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
BACKENDS = ["torch", "triton"]
# (B, ...) shapes: one element; odd sizes; a latent that is not a multiple of the 1024-wide
# block; several row blocks with a ragged last one; a 4-D latent flattened per sample.
SHAPES = [(1, 1), (3, 37), (5, 1100), (300, 20), (7, 2, 3, 5)]
# Tolerances against float64 follow the output dtype's rounding: z is stored in the input dtype,
# the KL is accumulated in float32 from the input values.
TOLERANCES = {
    torch.float32: {"atol": 1e-5, "rtol": 1e-5},
    torch.float16: {"atol": 2e-3, "rtol": 2e-3},
    torch.bfloat16: {"atol": 2e-2, "rtol": 2e-2},
}
KL_TOLERANCE = {"atol": 1e-4, "rtol": 1e-5}


@pytest.fixture(params=BACKENDS)
def backend(request, monkeypatch):
    monkeypatch.setenv("GENTOOL_KERNELS", request.param)
    return request.param


def random_inputs(shape, dtype, *, seed):
    generator = torch.Generator().manual_seed(seed)
    mu = torch.randn(shape, generator=generator)
    logvar = torch.randn(shape, generator=generator) * 0.8
    eps = torch.randn(shape, generator=generator)
    return [tensor.to(DEVICE, dtype) for tensor in (mu, logvar, eps)]


def reference(mu, logvar, eps):
    """float64 z and per-sample KL from the same (rounded) inputs."""
    return reparameterize_kl_reference(mu.double(), logvar.double(), eps=eps.double())


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", list(TOLERANCES), ids=str)
def test_forward_and_backward_match_the_float64_reference(backend, shape, dtype):
    mu, logvar, eps = random_inputs(shape, dtype, seed=sum(shape))
    mu.requires_grad_(True)
    logvar.requires_grad_(True)
    z, kl = reparameterize_kl(mu, logvar, eps=eps)
    assert z.shape == shape and z.dtype == dtype and kl.shape == (shape[0],)
    assert kl.dtype == torch.float32

    mu64 = mu.detach().double().requires_grad_(True)
    logvar64 = logvar.detach().double().requires_grad_(True)
    z64, kl64 = reparameterize_kl_reference(mu64, logvar64, eps=eps.double())
    torch.testing.assert_close(z.double(), z64, **TOLERANCES[dtype])
    torch.testing.assert_close(kl.double(), kl64, **KL_TOLERANCE)

    grad_z = torch.randn(shape, generator=torch.Generator().manual_seed(1)).to(DEVICE)
    grad_kl = torch.randn(shape[0], generator=torch.Generator().manual_seed(2)).to(DEVICE)
    torch.autograd.backward((z, kl), (grad_z.to(dtype), grad_kl))
    torch.autograd.backward((z64, kl64), (grad_z.to(dtype).double(), grad_kl.double()))
    torch.testing.assert_close(mu.grad.double(), mu64.grad, **TOLERANCES[dtype])
    torch.testing.assert_close(logvar.grad.double(), logvar64.grad, **TOLERANCES[dtype])


@pytest.mark.parametrize("output", ["z", "kl"])
def test_a_gradient_through_one_output_only(backend, output):
    mu, logvar, eps = random_inputs((4, 9), torch.float32, seed=5)
    mu.requires_grad_(True)
    logvar.requires_grad_(True)
    z, kl = reparameterize_kl(mu, logvar, eps=eps)
    (z.sum() if output == "z" else kl.sum()).backward()
    if output == "z":
        expected_mu, expected_logvar = torch.ones_like(mu), 0.5 * torch.exp(0.5 * logvar) * eps
    else:
        expected_mu, expected_logvar = mu, 0.5 * (logvar.exp() - 1)
    torch.testing.assert_close(mu.grad, expected_mu.detach())
    torch.testing.assert_close(logvar.grad, expected_logvar.detach())


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_reductions_over_the_batch(backend, reduction):
    mu, logvar, eps = random_inputs((6, 5), torch.float32, seed=6)
    _, per_sample = reparameterize_kl(mu, logvar, eps=eps)
    _, reduced = reparameterize_kl(mu, logvar, eps=eps, reduction=reduction)
    expected = per_sample.sum() if reduction == "sum" else per_sample.mean()
    torch.testing.assert_close(reduced, expected)


def test_non_contiguous_inputs(backend):
    mu, logvar, eps = random_inputs((6, 40), torch.float32, seed=7)
    mu_view, logvar_view, eps_view = mu[:, ::2], logvar[:, ::2], eps[:, ::2]
    assert not mu_view.is_contiguous()
    z, kl = reparameterize_kl(mu_view, logvar_view, eps=eps_view)
    z64, kl64 = reference(mu_view, logvar_view, eps_view)
    torch.testing.assert_close(z.double(), z64, **TOLERANCES[torch.float32])
    torch.testing.assert_close(kl.double(), kl64, **KL_TOLERANCE)


def test_drawn_noise_is_standard_normal(backend):
    shape = (64, 1000)
    zeros = torch.zeros(shape, device=DEVICE)
    z, kl = reparameterize_kl(zeros, zeros, seed=11)  # μ = 0, σ = 1: z is ε itself
    assert kl.abs().max() == 0
    count = z.numel()
    # Five standard errors: the mean's is 1/√n, the standard deviation's about 1/√(2n).
    assert abs(z.mean().item()) < 5 / count**0.5
    assert abs(z.std().item() - 1) < 5 / (2 * count) ** 0.5
    assert abs((z > 0).float().mean().item() - 0.5) < 5 * 0.5 / count**0.5


def test_the_backward_pass_sees_the_forward_noise(backend):
    mu, logvar, _ = random_inputs((8, 300), torch.float32, seed=12)
    mu.requires_grad_(True)
    logvar.requires_grad_(True)
    z, _ = reparameterize_kl(mu, logvar, seed=99)
    z.sum().backward()
    # With dz = 1 and no KL gradient, dlog σ² = ½·σ·ε = ½·(z − μ): the same ε, or this fails.
    torch.testing.assert_close(logvar.grad, 0.5 * (z - mu).detach(), atol=1e-6, rtol=1e-5)

    unit = torch.zeros(8, 300, device=DEVICE, requires_grad=True)
    z_unit, _ = reparameterize_kl(unit, torch.zeros_like(unit), seed=99)
    z_unit.sum().backward()
    assert torch.equal(unit.grad, torch.ones_like(unit))


def test_seeds_make_noise_repeatable(backend):
    mu, logvar, _ = random_inputs((4, 50), torch.float32, seed=13)
    first, _ = reparameterize_kl(mu, logvar, seed=5)
    again, _ = reparameterize_kl(mu, logvar, seed=5)
    other, _ = reparameterize_kl(mu, logvar, seed=6)
    assert torch.equal(first, again) and not torch.equal(first, other)
    torch.manual_seed(0)
    from_global, _ = reparameterize_kl(mu, logvar)
    torch.manual_seed(0)
    assert torch.equal(from_global, reparameterize_kl(mu, logvar)[0])


def saved_storages(function, *inputs):
    """The storages autograd keeps for the backward pass of `function(*inputs)`."""
    storages = []

    def pack(tensor):
        storages.append(tensor.untyped_storage())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        function(*inputs)
    return storages


def test_the_fused_op_saves_only_its_inputs_for_backward(monkeypatch):
    monkeypatch.setenv("GENTOOL_KERNELS", "triton")
    mu = torch.randn(16, 64, device=DEVICE, requires_grad=True)
    logvar = torch.randn(16, 64, device=DEVICE, requires_grad=True)
    inputs = {mu.untyped_storage().data_ptr(), logvar.untyped_storage().data_ptr()}

    fused = saved_storages(lambda m, v: reparameterize_kl(m, v, seed=1), mu, logvar)
    assert {storage.data_ptr() for storage in fused} <= inputs

    unfused = saved_storages(lambda m, v: reparameterize_kl_reference(m, v, seed=1), mu, logvar)
    extra_bytes = sum(storage.nbytes() for storage in unfused if storage.data_ptr() not in inputs)
    assert extra_bytes >= mu.numel() * mu.element_size()  # at least one ε-sized tensor


def test_the_reference_passes_gradcheck_in_float64():
    mu, logvar, eps = (torch.randn(3, 7, dtype=torch.float64) for _ in range(3))
    mu.requires_grad_(True)
    logvar.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda m, v: reparameterize_kl_reference(m, v, eps=eps), (mu, logvar)
    )


def test_an_empty_batch_gives_empty_outputs(backend):
    z, kl = reparameterize_kl(torch.zeros(0, 4, device=DEVICE), torch.zeros(0, 4, device=DEVICE))
    assert z.shape == (0, 4) and kl.shape == (0,)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"logvar": torch.zeros(2, 4)}, r"one shape \(B, \.\.\.\)"),
        ({"mu": torch.zeros(2, 3, dtype=torch.int64)}, "must share a float dtype"),
        ({"eps": torch.zeros(3, 3)}, r"eps must match mu: shape \(2, 3\)"),
        ({"reduction": "max"}, "reduction must be one of none, sum, mean"),
    ],
)
def test_bad_arguments_are_value_errors(arguments, message):
    values = {"mu": torch.zeros(2, 3), "logvar": torch.zeros(2, 3), **arguments}
    if values["mu"].dtype == torch.int64:
        values["logvar"] = values["mu"]
    mu, logvar = values.pop("mu"), values.pop("logvar")
    with pytest.raises(ValueError, match=message):
        reparameterize_kl(mu, logvar, **values)


def test_dispatch_rule(monkeypatch):
    cpu = torch.zeros(2)
    monkeypatch.setenv("GENTOOL_KERNELS", "auto")
    assert choose_backend("op", cpu) == "torch"  # auto never picks the slow interpreter
    monkeypatch.setenv("GENTOOL_KERNELS", "torch")
    assert choose_backend("op", cpu) == "torch"
    monkeypatch.setenv("GENTOOL_KERNELS", "triton")
    with pytest.raises(KernelUnavailable, match="float64 is not supported"):
        choose_backend("op", cpu.double())
    if not torch.cuda.is_available():
        monkeypatch.delenv("TRITON_INTERPRET", raising=False)
        with pytest.raises(
            KernelUnavailable,
            match=r"op: the Triton backend cannot run here "
            r"\(the tensor is on cpu, and Triton needs a CUDA device\)",
        ):
            choose_backend("op", cpu)
    monkeypatch.setenv("GENTOOL_KERNELS", "fastest")
    with pytest.raises(GentoolError, match="GENTOOL_KERNELS='fastest' is not a kernel backend"):
        choose_backend("op", cpu)
