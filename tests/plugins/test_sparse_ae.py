"""The sparse AE's defining properties: its hidden units end with mean activation rho over the data
and most of them silent for any one input, through the KL penalty of Ng's notes."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from gentool.api import Batch, DataSpec
from gentool.cli import app
from gentool.errors import ConfigError
from gentool.plugins.sparse_ae import plugin
from gentool.plugins.sparse_ae.model import SparseAE
from gentool.training.step import StepContext
from tests.plugins.autoencoding import faces, train

TINY = {"image_size": 8, "code_dim": 16}


def build(channels=3, **overrides) -> SparseAE:
    config = plugin.parse_config({**TINY, **overrides})
    return plugin.build(config, DataSpec(channels, config.image_size, config.image_size))


def step_logs(model: SparseAE, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """What one training step logs, without stepping."""
    optimizers = model.configure_optimizers()
    return model.training_step(Batch(x), StepContext(optimizers, torch.device("cpu")))


@pytest.mark.parametrize("channels", [1, 3])
def test_codes_and_reconstructions_have_the_right_shapes_and_range(channels):
    model = build(channels, code_dim=300).eval()  # wider than the 64 or 192 inputs
    x = torch.rand(5, channels, 8, 8, generator=torch.Generator().manual_seed(0))
    codes = model.encode(x)
    assert codes.shape == (5, 300) and codes.min() >= 0 and codes.max() <= 1
    reconstructions = model.reconstruct(x)
    assert reconstructions.shape == x.shape
    assert reconstructions.min() >= 0 and reconstructions.max() <= 1


def test_hidden_units_end_near_the_target_activation_and_mostly_silent(tiny_cpu_training):
    rho = 0.05
    torch.manual_seed(0)
    model = build(code_dim=256, rho=rho, beta=3.0, lr=1e-2)  # overcomplete: 256 > 192 inputs
    x = faces(256)
    train(model, x, steps=400)
    h = model.encode(x)  # (256, 256)
    unit_means = h.mean(dim=0)  # rho_hat_j over the data
    assert abs(h.mean().item() - rho) < 0.02
    # Each unit, not only their average, is pulled to rho: without the penalty (beta=0) unit
    # means here spread from 0 to above 0.7.
    assert (unit_means - rho).abs().max() < 0.02
    # For a given input most units are near 0.
    assert h.median(dim=1).values.median() < 0.1
    assert (h < 0.1).float().mean() > 0.8


def test_the_kl_penalty_matches_a_float64_reference():
    model = build(rho=0.1, beta=2.0)
    x = faces(8)
    logs = step_logs(model, x)
    rho_hat = model.encoder(x.flatten(1)).double().mean(dim=0)  # (p,)
    rho = 0.1
    expected = (
        rho * torch.log(rho / rho_hat) + (1 - rho) * torch.log((1 - rho) / (1 - rho_hat))
    ).sum()
    torch.testing.assert_close(logs["sparsity"].double(), expected.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(logs["loss"].detach(), logs["recon"] + 2.0 * logs["sparsity"])
    assert set(logs) == {"loss", "recon", "sparsity", "mean_activation"}


def test_the_l1_penalty_is_the_summed_activation_per_image():
    model = build(sparsity="l1", beta=0.5)
    x = faces(8)
    logs = step_logs(model, x)
    h = model.encoder(x.flatten(1)).double()
    torch.testing.assert_close(
        logs["sparsity"].double(), h.abs().sum(dim=1).mean().detach(), rtol=1e-5, atol=1e-6
    )
    torch.testing.assert_close(logs["loss"].detach(), logs["recon"] + 0.5 * logs["sparsity"])


def test_the_kl_penalty_is_zero_exactly_at_the_target():
    from gentool.plugins.sparse_ae.model import kl_sparsity

    activations = torch.full((4, 10), 0.2)
    assert kl_sparsity(0.2, activations).item() == pytest.approx(0.0, abs=1e-6)
    assert kl_sparsity(0.05, activations).item() > 0


def test_a_target_of_zero_is_a_config_error():
    with pytest.raises(ConfigError, match="rho must lie strictly between 0 and 1"):
        plugin.parse_config({"rho": 0.0})


def test_trains_through_the_cli(in_tmp):
    options = ["-o", "image_size=8", "-o", "code_dim=16"]
    result = CliRunner().invoke(
        app,
        [
            "train", "sparse-ae", *options,
            "--limit", "64", "-b", "16", "--epochs", "1", "--device", "cpu",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert len(list((in_tmp / "runs" / "sparse-ae").iterdir())) == 1
