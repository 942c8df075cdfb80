"""The contractive AE's defining properties: its penalty is the squared Frobenius norm of the
encoder's Jacobian, and training with it leaves an encoder less sensitive than a plain AE's."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from gentool.api import Batch, DataSpec
from gentool.cli import app
from gentool.plugins.contractive_ae import plugin
from gentool.plugins.contractive_ae.model import ContractiveAE
from gentool.training.step import StepContext
from tests.plugins.autoencoding import faces, train

TINY = {"image_size": 8, "code_dim": 8}


def build(channels=3, **overrides) -> ContractiveAE:
    config = plugin.parse_config({**TINY, **overrides})
    return plugin.build(config, DataSpec(channels, config.image_size, config.image_size))


def autograd_jacobian_norm_squared(model: ContractiveAE, flat: torch.Tensor) -> torch.Tensor:
    """‖∂f/∂x‖_F² per image by autograd, one code unit at a time: the reference."""
    flat = flat.detach().requires_grad_(True)
    codes = model.encoder(flat)  # (B, p)
    total = torch.zeros(len(flat), dtype=flat.dtype)
    for unit in range(codes.shape[1]):  # row `unit` of each image's Jacobian
        (row,) = torch.autograd.grad(codes[:, unit].sum(), flat, retain_graph=True)  # (B, n)
        total += row.square().sum(dim=1)
    return total


@pytest.mark.parametrize("hidden", [(), (16,)])
@pytest.mark.parametrize("channels", [1, 3])
def test_codes_and_reconstructions_have_the_right_shapes_and_range(hidden, channels):
    model = build(channels, hidden=hidden).eval()
    x = torch.rand(5, channels, 8, 8, generator=torch.Generator().manual_seed(0))
    assert model.encode(x).shape == (5, 8)
    reconstructions = model.reconstruct(x)
    assert reconstructions.shape == x.shape
    assert reconstructions.min() >= 0 and reconstructions.max() <= 1


@pytest.mark.parametrize("hidden", [(), (16,)])  # the closed form, and jacrev for deeper nets
def test_the_penalty_is_the_jacobian_frobenius_norm_squared(hidden):
    torch.manual_seed(0)
    model = build(hidden=hidden, code_dim=6).double()
    flat = torch.rand(5, 192, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    penalty = model.jacobian_norm_squared(flat, model.encoder(flat))
    torch.testing.assert_close(
        penalty, autograd_jacobian_norm_squared(model, flat), rtol=1e-10, atol=1e-12
    )


def test_the_loss_is_recon_plus_lambda_times_the_mean_penalty():
    model = build(contraction=0.7)
    x = faces(6)
    optimizers = model.configure_optimizers()
    logs = model.training_step(Batch(x), StepContext(optimizers, torch.device("cpu")))
    assert set(logs) == {"loss", "recon", "jacobian"}
    torch.testing.assert_close(logs["loss"].detach(), logs["recon"] + 0.7 * logs["jacobian"])
    expected = autograd_jacobian_norm_squared(model, x.flatten(1)).mean()
    torch.testing.assert_close(logs["jacobian"], expected)


def test_its_encoder_is_less_sensitive_than_a_plain_autoencoders(tiny_cpu_training):
    x = faces(256)
    norms = {}
    for contraction in (1.0, 0.0):  # 0: a plain autoencoder, trained the same way
        torch.manual_seed(0)
        model = build(code_dim=32, contraction=contraction, lr=3e-3)
        train(model, x, steps=150)
        norms[contraction] = autograd_jacobian_norm_squared(model, x[:64].flatten(1)).mean()
    assert norms[1.0] < 0.5 * norms[0.0]


def test_trains_through_the_cli(in_tmp):
    options = ["-o", "image_size=8", "-o", "code_dim=8"]
    result = CliRunner().invoke(
        app,
        [
            "train", "contractive-ae", *options,
            "--limit", "64", "-b", "16", "--epochs", "1", "--device", "cpu",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert len(list((in_tmp / "runs" / "contractive-ae").iterdir())) == 1
