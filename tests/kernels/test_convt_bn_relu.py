"""ConvTransposeBNReLU on every backend against the float64 composition of the unfused layers.

Backends: torch (the composition), triton (the vendor's convolution, then Triton's fused
BatchNorm + ReLU) and triton-gemm (the convolution too in Triton, an implicit GEMM). Triton runs
natively on a GPU and under TRITON_INTERPRET=1 on the CPU (see conftest.py), so the shapes are
DCGAN's scaled down. Each case trains three steps on fresh random inputs and compares outputs,
running statistics and the gradients of x, weight, γ and β, then the eval-mode output.

Tolerances, float32 against float64 (TF32 off on a GPU): 1e-5 absolute + 1e-4 relative for
outputs and running statistics, 1e-4 + 1e-4 for gradients (sums over batch × pixels). The case
whose mean is 1000 standard deviations from zero allows 2e-3 + 1e-3 for both: float32 holds its
values, and their mean, only to 2⁻²⁴·1000σ ≈ 6e-5σ, an error that normalisation scales to 6e-5
of x̂ and the ReLU mask and gradient sums amplify. Sum and sum-of-squares statistics miss there by
orders of magnitude more (the variance is lost entirely).
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from gentool.kernels import (
    ConvTransposeBNReLU,
    convt_bn_relu,
    triton_batch_norm_backward,
    triton_convt_gemm,
)
from gentool.kernels import convt_bn_relu_fused as fused
from gentool.kernels.dispatch import KernelUnavailable

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
BACKENDS = ["torch", "triton", "triton-gemm"]
CONVOLUTION = {"torch": "vendor", "triton": "vendor", "triton-gemm": "gemm"}
OUTPUT_TOLERANCE = {"atol": 1e-5, "rtol": 1e-4}
GRADIENT_TOLERANCE = {"atol": 1e-4, "rtol": 1e-4}
LARGE_MEAN_TOLERANCE = {"atol": 2e-3, "rtol": 1e-3}
STEPS = 3

# (batch, in channels, out channels, kernel, stride, padding, height, width)
CASES = {
    # DCGAN's generator blocks with narrow layers: z projected to 4×4, then doubling strides. The
    # projection's odd batch of 65 spans two row tiles of the GEMM and two backward slices.
    "dcgan-projection": (65, 20, 16, 4, 1, 0, 1, 1),
    "dcgan-8x8": (2, 16, 8, 4, 2, 1, 4, 4),
    "dcgan-16x16": (2, 8, 4, 4, 2, 1, 8, 8),
    "dcgan-16x16-batch-1": (1, 4, 3, 4, 2, 1, 8, 8),
    # Enough GEMM tiles and backward shares that their partials are merged over several passes.
    "dcgan-16x16-batch-20": (20, 4, 3, 4, 2, 1, 8, 8),
    # Odd channel counts and sizes, and the general path: other kernels, strides and paddings.
    "odd-sizes": (1, 5, 3, 4, 2, 1, 3, 5),
    "kernel-3-stride-1": (2, 7, 5, 3, 1, 1, 7, 6),
    "kernel-5-stride-3": (2, 3, 4, 5, 3, 2, 4, 3),
    "kernel-3-stride-2-35-channels": (2, 3, 35, 3, 2, 0, 3, 3),
    "stride-larger-than-kernel": (2, 3, 2, 2, 3, 0, 3, 2),
}


@pytest.fixture(autouse=True)
def exact_float32():
    """TF32 would round the GPU's float32 convolutions to 10 mantissa bits."""
    previous = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32 = previous


@pytest.fixture(params=BACKENDS)
def backend(request, monkeypatch):
    monkeypatch.setenv("GENTOOL_KERNELS", "torch" if request.param == "torch" else "triton")
    return request.param


@pytest.fixture
def kernel_calls(monkeypatch):
    """Counts the Triton paths' calls, to prove which path ran."""
    calls = {"training_forward": 0, "eval_forward": 0, "backward": 0}
    for module, name in [
        (fused, "training_forward"),
        (fused, "eval_forward"),
        (triton_batch_norm_backward, "backward"),
    ]:
        original = getattr(module, name)

        def counted(*args, _name=name, _original=original, **kwargs):
            calls[_name] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(module, name, counted)
    return calls


def unfused(block: ConvTransposeBNReLU) -> nn.Sequential:
    """The float64 composition of the layers, with the fused module's parameters and buffers."""
    conv, bn = block.conv, block.bn
    reference = nn.Sequential(
        nn.ConvTranspose2d(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            conv.stride,
            conv.padding,
            bias=conv.bias is not None,
        ),
        nn.BatchNorm2d(conv.out_channels, eps=bn.eps, momentum=bn.momentum),
        nn.ReLU(),
    )
    reference.load_state_dict(block.state_dict())
    return reference.to(DEVICE, torch.float64)


def make_block(case, *, seed, backend="torch", bias=False, momentum=0.1):
    _, in_channels, out_channels, kernel, stride, padding, _, _ = case
    torch.manual_seed(seed)
    block = ConvTransposeBNReLU(
        in_channels,
        out_channels,
        kernel,
        stride,
        padding,
        bias=bias,
        momentum=momentum,
        convolution=CONVOLUTION[backend],
    )
    with torch.no_grad():  # γ and β away from 1 and 0, so their gradients matter
        block.bn.weight.uniform_(0.5, 1.5)
        block.bn.bias.uniform_(-0.5, 0.5)
    return block.to(DEVICE)


def random_input(case, *, seed, scale=1.0):
    batch, in_channels, _, _, _, _, height, width = case
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, in_channels, height, width, generator=generator) * scale).to(DEVICE)


def train_and_compare(
    block,
    reference,
    inputs,
    output_tolerance=OUTPUT_TOLERANCE,
    gradient_tolerance=GRADIENT_TOLERANCE,
):
    for step, x in enumerate(inputs):
        x = x.requires_grad_(True)
        x64 = x.detach().double().requires_grad_(True)
        out, out64 = block(x), reference(x64)
        torch.testing.assert_close(out.double(), out64, **output_tolerance)
        grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(100 + step))
        block.zero_grad()
        reference.zero_grad()
        out.backward(grad.to(DEVICE))
        out64.backward(grad.to(DEVICE, torch.float64))
        torch.testing.assert_close(x.grad.double(), x64.grad, **gradient_tolerance)
        for (name, parameter), expected in zip(
            block.named_parameters(), reference.parameters(), strict=True
        ):
            assert parameter.grad is not None, name
            torch.testing.assert_close(
                parameter.grad.double(),
                expected.grad,
                **gradient_tolerance,
                msg=lambda message, name=name: f"{name}: {message}",
            )
        for name in ("running_mean", "running_var"):
            torch.testing.assert_close(
                getattr(block.bn, name).double(),
                getattr(reference[1], name),
                **output_tolerance,
                msg=name,
            )
        assert block.bn.num_batches_tracked.item() == reference[1].num_batches_tracked.item()


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_training_and_eval_match_the_float64_layers(backend, case, kernel_calls):
    block = make_block(case, seed=sum(case), backend=backend)
    reference = unfused(block)
    inputs = [random_input(case, seed=step) for step in range(STEPS)]
    train_and_compare(block, reference, inputs)

    block.eval()
    reference.eval()
    x = random_input(case, seed=STEPS)
    with torch.no_grad():
        torch.testing.assert_close(block(x).double(), reference(x.double()), **OUTPUT_TOLERANCE)
    expected_calls = 0 if backend == "torch" else STEPS
    assert kernel_calls == {
        "training_forward": expected_calls,
        "backward": expected_calls,
        "eval_forward": 0 if backend == "torch" else 1,
    }


def test_a_mean_a_thousand_standard_deviations_from_zero(backend):
    """Sum and sum-of-squares statistics lose every digit of the variance here."""
    case = CASES["dcgan-8x8"]
    block = make_block(case, seed=3, backend=backend, bias=True)
    x = random_input(case, seed=4)
    with torch.no_grad():
        block.conv.bias.copy_(1000 * block.conv(x).std(dim=(0, 2, 3)))
        conv_out = block.conv(x)
    ratio = conv_out.mean(dim=(0, 2, 3)) / conv_out.std(dim=(0, 2, 3))
    torch.testing.assert_close(ratio, torch.full_like(ratio, 1000), rtol=0.01, atol=0)
    reference = unfused(block)
    inputs = [x] + [random_input(case, seed=step) for step in range(5, 5 + STEPS - 1)]
    train_and_compare(block, reference, inputs, LARGE_MEAN_TOLERANCE, LARGE_MEAN_TOLERANCE)


def test_cumulative_running_average_when_momentum_is_none(backend):
    case = CASES["dcgan-16x16"]
    block = make_block(case, seed=6, backend=backend, momentum=None)
    reference = unfused(block)
    train_and_compare(block, reference, [random_input(case, seed=step) for step in range(STEPS)])


def test_batch_statistics_without_running_statistics(backend):
    case = CASES["odd-sizes"]
    block = make_block(case, seed=7, backend=backend)
    x = random_input(case, seed=8)
    conv, bn = block.conv, block.bn
    out = convt_bn_relu(
        x, conv.weight, None, bn.weight, bn.bias, None, None, training=False, momentum=0.1,
        eps=bn.eps, stride=2, padding=1, convolution=CONVOLUTION[backend],
    )  # fmt: skip
    expected = nn.functional.relu(
        nn.functional.batch_norm(
            nn.functional.conv_transpose2d(x.double(), conv.weight.double(), None, 2, 1),
            None,
            None,
            bn.weight.double(),
            bn.bias.double(),
            training=True,
            eps=bn.eps,
        )
    )
    torch.testing.assert_close(out.double(), expected, **OUTPUT_TOLERANCE)


def test_eval_mode_gradients_go_through_the_composition(backend, kernel_calls):
    case = CASES["dcgan-8x8"]
    block = make_block(case, seed=9, backend=backend).eval()
    reference = unfused(block).eval()
    x = random_input(case, seed=10).requires_grad_(True)
    x64 = x.detach().double().requires_grad_(True)
    block(x).sum().backward()
    reference(x64).sum().backward()
    torch.testing.assert_close(x.grad.double(), x64.grad, **GRADIENT_TOLERANCE)
    torch.testing.assert_close(
        block.conv.weight.grad.double(), reference[0].weight.grad, **GRADIENT_TOLERANCE
    )
    assert kernel_calls["eval_forward"] == 0


def test_the_gemm_convolution_alone_matches_pytorch():
    for name, case in CASES.items():
        block = make_block(case, seed=11)
        x = random_input(case, seed=12)
        stride, padding = block.conv.stride[0], block.conv.padding[0]
        actual, _ = triton_convt_gemm.conv_transpose(x, block.conv.weight.detach(), stride, padding)
        expected = nn.functional.conv_transpose2d(
            x.double(), block.conv.weight.double(), None, stride, padding
        )
        torch.testing.assert_close(actual.double(), expected, **OUTPUT_TOLERANCE, msg=name)


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last], ids=str)
def test_the_output_keeps_the_input_memory_format(backend, memory_format):
    case = CASES["dcgan-16x16"]
    block = make_block(case, seed=13, backend=backend)
    reference = unfused(block)
    x = random_input(case, seed=14).to(memory_format=memory_format)
    train_and_compare(block, reference, [x])
    for mode in ("train", "eval"):
        block.train(mode == "train")
        with torch.no_grad():
            assert block(x).is_contiguous(memory_format=memory_format), mode


def test_one_value_per_channel_is_refused_as_by_batchnorm(backend):
    case = (1, 4, 3, 1, 1, 0, 1, 1)  # batch 1, a 1×1 output: no variance to normalise by
    block = make_block(case, seed=15, backend=backend)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        block(random_input(case, seed=16))


@pytest.mark.parametrize("direction", ["fused to unfused", "unfused to fused"])
def test_state_dicts_move_between_fused_and_unfused_modules(backend, direction):
    case = CASES["dcgan-8x8"]
    fused_block = make_block(case, seed=17, backend=backend)
    fused_block(random_input(case, seed=18))  # running statistics away from their initial values
    plain = unfused(fused_block).float()
    source, target = (
        (fused_block, plain) if direction == "fused to unfused" else (plain, fused_block)
    )
    if direction == "unfused to fused":
        plain(random_input(case, seed=19))
        target = make_block(case, seed=20, backend=backend)
    target.load_state_dict(source.state_dict())
    assert source.state_dict().keys() == target.state_dict().keys()
    x = random_input(case, seed=21)
    for mode in ("eval", "train"):
        source.train(mode == "train")
        target.train(mode == "train")
        with torch.no_grad():
            torch.testing.assert_close(target(x), source(x), **OUTPUT_TOLERANCE, msg=mode)


def saved_bytes(module, x):
    """The bytes autograd keeps for the backward pass of `module(x)`, beyond x and parameters."""
    kept = {x.untyped_storage().data_ptr()} | {
        parameter.untyped_storage().data_ptr() for parameter in module.parameters()
    }
    storages = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in kept:
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        module(x)
    return sum(storages.values())


@pytest.mark.parametrize("backend", ["triton", "triton-gemm"])
def test_the_fused_block_saves_the_convolution_output_and_per_channel_statistics(
    monkeypatch, backend
):
    monkeypatch.setenv("GENTOOL_KERNELS", "triton")
    case = CASES["dcgan-16x16"]
    block = make_block(case, seed=30, backend=backend)
    x = random_input(case, seed=31).requires_grad_(True)
    conv_output = block.conv(x).detach()
    channels = conv_output.shape[1]
    # y, and γ's dtype-cast copies and mean, 1/σ, scale and shift: a few floats per channel.
    assert saved_bytes(block, x) <= conv_output.nbytes + 8 * channels * 4
    monkeypatch.setenv("GENTOOL_KERNELS", "torch")
    assert saved_bytes(block, x) >= 2 * conv_output.nbytes  # the layers keep y and its BatchNorm


def test_replaced_batch_norm_runs_as_the_composition(monkeypatch, kernel_calls):
    monkeypatch.setenv("GENTOOL_KERNELS", "triton")
    case = CASES["dcgan-8x8"]
    block = make_block(case, seed=22)
    converted = nn.SyncBatchNorm.convert_sync_batchnorm(block).eval()
    assert isinstance(converted.bn, nn.SyncBatchNorm)
    x = random_input(case, seed=23)
    with torch.no_grad():
        torch.testing.assert_close(converted(x), unfused(block).eval().float()(x))
    assert kernel_calls == {"training_forward": 0, "eval_forward": 0, "backward": 0}


def test_a_traced_block_is_its_layers_and_keeps_a_dynamic_batch(monkeypatch, kernel_calls):
    """torch.jit.trace (TorchScript export) records the composition, without the Python checks
    that pick a backend: those would warn that the trace may not generalise."""
    monkeypatch.setenv("GENTOOL_KERNELS", "triton")
    case = CASES["dcgan-8x8"]
    block = make_block(case, seed=26).eval().requires_grad_(False)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", r"`torch\.jit\.trace", DeprecationWarning)
        traced = torch.jit.trace(block, random_input(case, seed=27))
    kernel_calls.update(dict.fromkeys(kernel_calls, 0))  # the trace's check ran the block eagerly
    other_batch = torch.randn(5, *random_input(case, seed=28).shape[1:], device=DEVICE)
    with torch.no_grad():
        torch.testing.assert_close(traced(other_batch), unfused(block).eval().float()(other_batch))
    assert kernel_calls == {"training_forward": 0, "eval_forward": 0, "backward": 0}


def test_forcing_triton_where_it_cannot_run_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("GENTOOL_KERNELS", "triton")
    case = CASES["dcgan-8x8"]
    block = make_block(case, seed=24).double()
    with pytest.raises(KernelUnavailable, match="float64 is not supported"):
        block(random_input(case, seed=25).double())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="half precision runs on the GPU")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_autocast_runs_the_convolution_in_half_precision(backend, dtype):
    case = CASES["dcgan-16x16"]
    block = make_block(case, seed=26, backend=backend)
    reference = unfused(block)
    x = random_input(case, seed=27)
    with torch.autocast("cuda", dtype=dtype):
        out = block(x)
    assert out.dtype == dtype
    out.float().sum().backward()
    assert block.conv.weight.grad.dtype == torch.float32
    expected = reference(x.to(dtype).double())
    torch.testing.assert_close(out.double(), expected, atol=3e-2, rtol=3e-2)


def test_the_dcgan_generator_runs_its_blocks_on_the_triton_backend(monkeypatch, kernel_calls):
    """The generator's output and gradients on Triton's path, against PyTorch's."""
    from gentool.api import DataSpec
    from gentool.plugins import dcgan

    config = dcgan.Config(image_size=16, latent_dim=8, g_features=8, d_features=8)
    spec = DataSpec(channels=3, height=16, width=16)
    z = torch.randn(4, 8, generator=torch.Generator().manual_seed(28)).to(DEVICE)
    images, gradients = {}, {}
    for backend in ("torch", "triton"):
        monkeypatch.setenv("GENTOOL_KERNELS", backend)
        torch.manual_seed(29)
        generator = dcgan.build(config, spec).to(DEVICE).generator
        images[backend] = generator(z)
        images[backend].square().sum().backward()
        gradients[backend] = [parameter.grad for parameter in generator.parameters()]
    torch.testing.assert_close(images["triton"], images["torch"], **OUTPUT_TOLERANCE)
    for triton_grad, torch_grad in zip(gradients["triton"], gradients["torch"], strict=True):
        torch.testing.assert_close(triton_grad, torch_grad, **GRADIENT_TOLERANCE)
    assert kernel_calls["training_forward"] == kernel_calls["backward"] == 2  # its two blocks
