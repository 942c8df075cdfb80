"""The backend rule: what `auto` picks, its one-line fallback, `--kernels triton`'s preflight, and
the blocks that would run as plain layers.

`auto` picks Triton only on a GPU; here a CPU tensor stands in for one (`_on_gpu` answers yes)
and Triton's interpreter runs the kernels, so the rule is exercised end to end without a GPU.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from gentool.kernels import (
    ConvTransposeBNReLU,
    convt_bn_relu_fused,
    dispatch,
    fused_blocks_running_plain,
    reparameterize_kl,
    triton_batch_norm,
    triton_batch_norm_backward,
    triton_reparam_kl,
)
from gentool.kernels.dispatch import (
    AUTO_ON_CUDA,
    KernelFallbackWarning,
    KernelUnavailable,
    choose_backend,
    use_backend,
)
from gentool.kernels.preflight import preflight

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


@pytest.fixture
def auto_on_a_gpu(monkeypatch):
    """`auto` as on a GPU, with a fresh record of which ops fell back."""
    monkeypatch.setattr(dispatch, "_on_gpu", lambda tensor: True)
    monkeypatch.setattr(dispatch, "_fallen_back", {})
    with use_backend("auto"):
        yield


def failing(*args, **kwargs):
    raise RuntimeError("ptxas error: Entry function uses too much shared data\nsecond line")


def block_and_input(seed=0):
    torch.manual_seed(seed)
    block = ConvTransposeBNReLU(6, 4, 4, 2, 1).to(DEVICE)
    x = torch.randn(2, 6, 3, 3, generator=torch.Generator().manual_seed(seed)).to(DEVICE)
    return block, x.requires_grad_(True)


def plain_copy(block):
    plain = nn.Sequential(
        nn.ConvTranspose2d(6, 4, 4, 2, 1, bias=False), nn.BatchNorm2d(4), nn.ReLU()
    )
    plain.load_state_dict(block.state_dict())
    return plain.to(DEVICE)


def test_auto_picks_the_documented_backend_of_each_op_on_a_gpu(auto_on_a_gpu):
    assert AUTO_ON_CUDA == {"reparameterize_kl": "triton", "convt_bn_relu": "triton"}
    for op, backend in AUTO_ON_CUDA.items():
        assert choose_backend(op, torch.zeros(2, device=DEVICE)) == backend
    assert choose_backend("an op auto does not know", torch.zeros(2, device=DEVICE)) == "torch"


def test_auto_runs_the_vendor_convolution_path_of_the_block(auto_on_a_gpu, monkeypatch):
    calls = []
    original = triton_batch_norm.statistics
    monkeypatch.setattr(triton_batch_norm, "statistics", lambda y: calls.append(y) or original(y))
    block, x = block_and_input()
    block(x)
    assert len(calls) == 1  # the vendor path gathers its statistics; the GEMM's epilogue does not


def test_auto_never_picks_the_interpreter():
    with use_backend("auto"):
        for op in AUTO_ON_CUDA:
            assert choose_backend(op, torch.zeros(2)) == "torch"


def test_a_failing_kernel_under_auto_says_so_once_and_continues_on_pytorch(
    auto_on_a_gpu, monkeypatch
):
    monkeypatch.setattr(triton_batch_norm, "statistics", failing)
    block, x = block_and_input()
    plain = plain_copy(block)
    with pytest.warns(KernelFallbackWarning) as caught:
        out = block(x)
    torch.testing.assert_close(out, plain(x))
    # The running statistics were updated once, by the PyTorch path.
    torch.testing.assert_close(block.bn.running_var, plain[1].running_var)
    (warning,) = caught
    message = str(warning.message)
    assert "\n" not in message
    assert message.startswith("convt_bn_relu: the Triton kernels failed (RuntimeError: ptxas error")
    assert "--kernels torch" in message
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once: the next call is silent, and on PyTorch
        block(x)
        assert choose_backend("convt_bn_relu", x) == "torch"
    assert choose_backend("reparameterize_kl", x) == "triton"  # the other op is unaffected


def test_a_failing_backward_kernel_under_auto_falls_back_with_the_same_gradients(
    auto_on_a_gpu, monkeypatch
):
    block, x = block_and_input(seed=1)
    plain = plain_copy(block)
    x_plain = x.detach().clone().requires_grad_(True)
    monkeypatch.setattr(triton_batch_norm_backward, "backward", failing)
    out = block(x)  # the forward pass on Triton
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(2)).to(DEVICE)
    with pytest.warns(KernelFallbackWarning, match="convt_bn_relu: the Triton kernels failed"):
        out.backward(grad)
    plain(x_plain).backward(grad)
    torch.testing.assert_close(x.grad, x_plain.grad, atol=1e-5, rtol=1e-4)
    for (name, parameter), expected in zip(
        block.named_parameters(), plain.parameters(), strict=True
    ):
        torch.testing.assert_close(parameter.grad, expected.grad, atol=1e-5, rtol=1e-4, msg=name)


def test_a_failing_reparameterisation_backward_under_auto_keeps_the_forward_noise(
    auto_on_a_gpu, monkeypatch
):
    mu = torch.randn(4, 37, device=DEVICE, requires_grad=True)
    logvar = torch.randn(4, 37, device=DEVICE, requires_grad=True)
    z, kl = reparameterize_kl(mu, logvar, seed=7)
    monkeypatch.setattr(triton_reparam_kl, "backward", failing)
    with pytest.warns(KernelFallbackWarning, match="reparameterize_kl: the Triton kernels failed"):
        (z.sum() + kl.sum()).backward()
    # dlog σ² = ½·(z − μ) + ½·(σ² − 1): the forward's ε, or this fails.
    expected = 0.5 * (z - mu) + 0.5 * (logvar.exp() - 1)
    torch.testing.assert_close(logvar.grad, expected.detach(), atol=1e-5, rtol=1e-5)


def test_input_errors_propagate_under_auto_without_a_fallback(auto_on_a_gpu):
    block = ConvTransposeBNReLU(3, 2, 1, 1, 0).to(DEVICE)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        block(torch.randn(1, 3, 1, 1, device=DEVICE))
    assert dispatch._fallen_back == {}


def test_under_triton_a_failing_kernel_is_an_error_not_a_fallback(monkeypatch):
    monkeypatch.setattr(triton_batch_norm, "statistics", failing)
    block, x = block_and_input()
    with use_backend("triton"), pytest.raises(RuntimeError, match="ptxas error"):
        block(x)


def test_preflight_runs_every_fused_op_under_triton(monkeypatch):
    calls = []
    for module, name in [
        (convt_bn_relu_fused, "training_forward"),
        (convt_bn_relu_fused, "eval_forward"),
        (triton_batch_norm_backward, "backward"),
        (triton_reparam_kl, "forward"),
        (triton_reparam_kl, "backward"),
    ]:
        original = getattr(module, name)
        monkeypatch.setattr(
            module, name, lambda *a, _o=original, _n=name, **k: calls.append(_n) or _o(*a, **k)
        )
    with use_backend("triton"):
        preflight(DEVICE)
    assert sorted(calls) == sorted(
        ["training_forward", "eval_forward", "backward", "forward", "backward"]
    )


def test_preflight_names_the_op_whose_kernels_fail_under_triton(monkeypatch):
    monkeypatch.setattr(triton_batch_norm_backward, "backward", failing)
    with use_backend("triton"), pytest.raises(KernelUnavailable) as raised:
        preflight(DEVICE)
    message = str(raised.value)
    assert "\n" not in message
    assert message == (
        f"--kernels triton: convt_bn_relu cannot run its Triton kernels on {DEVICE} "
        "(RuntimeError: ptxas error: Entry function uses too much shared data); "
        "use --kernels auto or torch"
    )


@pytest.mark.parametrize("backend", ["auto", "torch"])
def test_preflight_does_nothing_unless_triton_is_asked_for(monkeypatch, backend):
    monkeypatch.setattr(convt_bn_relu_fused, "training_forward", failing)
    monkeypatch.setattr(triton_reparam_kl, "forward", failing)
    with use_backend(backend):
        preflight(DEVICE)


@pytest.mark.skipif(torch.cuda.is_available(), reason="Triton runs on a GPU here")
def test_preflight_without_a_device_for_triton_is_the_backend_check(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with use_backend("triton"), pytest.raises(KernelUnavailable, match="Triton needs a CUDA"):
        preflight(torch.device("cpu"))


def dcgan_generator():
    from gentool.api import DataSpec
    from gentool.plugins import dcgan

    config = dcgan.Config(image_size=16, latent_dim=8, g_features=8, d_features=8)
    return dcgan.build(config, DataSpec(channels=3, height=16, width=16)).generator


def test_no_fused_block_runs_plain_in_a_model_as_built():
    assert fused_blocks_running_plain(dcgan_generator()) == []


def test_replaced_layers_make_their_blocks_run_plain():
    generator = dcgan_generator()
    names = [
        name
        for name, module in generator.named_modules()
        if isinstance(module, ConvTransposeBNReLU)
    ]
    converted = nn.SyncBatchNorm.convert_sync_batchnorm(generator)
    assert fused_blocks_running_plain(converted) == names
    assert len(names) == 2


def test_a_reconfigured_layer_makes_its_block_run_plain():
    block = ConvTransposeBNReLU(4, 3, 4, 2, 1)
    block.conv.dilation = (2, 2)
    assert fused_blocks_running_plain(nn.Sequential(block)) == ["0"]


def test_under_torch_compile_every_fused_block_runs_plain():
    generator = dcgan_generator()
    assert len(fused_blocks_running_plain(generator, compiled=True)) == 2


def test_a_backward_pass_run_in_another_context_keeps_its_forward_backend(monkeypatch):
    """Autograd runs a CUDA backward pass in a thread of its own, outside `use_backend`."""
    import contextvars

    monkeypatch.setattr(triton_batch_norm_backward, "backward", failing)
    block, x = block_and_input(seed=3)
    with use_backend("triton"):
        out = block(x)
    fresh = contextvars.Context()  # what a thread of autograd's sees: the default, auto
    with pytest.raises(RuntimeError, match="ptxas error"):
        fresh.run(out.sum().backward)
