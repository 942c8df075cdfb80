"""The undercomplete AE's defining properties: a code smaller than the image, and with linear
layers and squared error, the span of PCA's top components (notes §1.2.2)."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from gentool.api import Batch, DataSpec
from gentool.cli import app
from gentool.errors import ConfigError
from gentool.plugins.ae import plugin
from gentool.plugins.ae.model import AE
from gentool.training.step import StepContext
from tests.plugins.autoencoding import faces, train

TINY = {"image_size": 8, "hidden": (16,), "code_dim": 4}


def build(channels=3, **overrides) -> AE:
    config = plugin.parse_config({**TINY, **overrides})
    return plugin.build(config, DataSpec(channels, config.image_size, config.image_size))


def step_logs(model: AE, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """What one training step logs, without stepping."""
    optimizers = model.configure_optimizers()
    return model.training_step(Batch(x), StepContext(optimizers, torch.device("cpu")))


def low_rank_images(count: int, rank: int, generator: torch.Generator) -> torch.Tensor:
    """(count, 1, 8, 8): 0.5 plus `rank` orthonormal patterns of distinct scales, a little noise."""
    basis, _ = torch.linalg.qr(torch.randn(64, rank, generator=generator))  # (64, rank)
    scales = torch.linspace(1.0, 0.55, rank)  # distinct, so PCA's top components are well defined
    weights = torch.rand(count, rank, generator=generator) * 2 - 1  # (count, rank)
    flat = 0.5 + (weights * scales) @ basis.T + 0.005 * torch.randn(count, 64, generator=generator)
    return flat.clamp(0, 1).view(count, 1, 8, 8)


def principal_angles_degrees(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Angles between the column spaces of (n, k) `a` and `b`."""
    cosines = torch.linalg.svdvals(torch.linalg.qr(a)[0].T @ torch.linalg.qr(b)[0])
    return torch.rad2deg(torch.arccos(cosines.clamp(max=1.0)))


@pytest.mark.parametrize("linear", [False, True])
@pytest.mark.parametrize("channels", [1, 3])
def test_codes_and_reconstructions_have_the_right_shapes_and_range(linear, channels):
    model = build(channels, linear=linear).eval()
    x = torch.rand(5, channels, 8, 8, generator=torch.Generator().manual_seed(0))
    assert model.encode(x).shape == (5, 4)
    reconstructions = model.reconstruct(x)
    assert reconstructions.shape == x.shape
    assert reconstructions.min() >= 0 and reconstructions.max() <= 1


def test_a_linear_ae_spans_the_same_subspace_as_pca(tiny_cpu_training):
    rank = 4
    x = low_rank_images(512, rank, torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    model = build(channels=1, hidden=(), code_dim=rank, linear=True, lr=3e-2)
    train(model, x, steps=1500)

    flat = x.flatten(1)  # (512, 64)
    top_components = torch.linalg.svd(flat - flat.mean(dim=0), full_matrices=False).Vh[:rank].T
    with torch.no_grad():  # the decoder is affine: its columns are g(e_i) − g(0)
        span = (model.decoder(torch.eye(rank)) - model.decoder(torch.zeros(1, rank))).T  # (64, k)
    # A sigmoid at the output (linear=false) ends about 2.6° off here: the test tells them apart.
    assert principal_angles_degrees(span, top_components).max() < 1.0


def test_the_linear_ae_clamps_only_its_output():
    model = build(linear=True)
    with torch.no_grad():
        model.decoder[-1].bias.fill_(3.0)  # every raw output far above 1
    x = faces(4)
    assert torch.equal(model.reconstruct(x), torch.ones_like(x))
    # while the loss sees the raw output, about 3 for every pixel
    assert step_logs(model, x)["recon"] > 192 * 1.5**2


def test_training_improves_reconstructions(tiny_cpu_training):
    torch.manual_seed(0)
    model = build(hidden=(64,), code_dim=16, lr=3e-3)
    x = faces(64)
    before = (model.eval().reconstruct(x) - x).square().mean()
    train(model.train(), x, steps=150)
    after = (model.eval().reconstruct(x) - x).square().mean()
    assert after < 0.5 * before


@pytest.mark.parametrize("loss", ["mse", "bce"])
def test_the_loss_is_the_reconstruction_error_summed_over_pixels(loss):
    model = build(loss=loss)
    x = faces(6)
    logs = step_logs(model, x)
    assert set(logs) == {"loss", "recon"}
    flat = x.flatten(1).double()
    logits = model.decoder(model.encoder(x.flatten(1))).double()
    if loss == "bce":
        expected = -(
            flat * torch.log(torch.sigmoid(logits)) + (1 - flat) * torch.log(torch.sigmoid(-logits))
        )
    else:
        expected = (torch.sigmoid(logits) - flat).square()
    torch.testing.assert_close(
        logs["loss"].double(), expected.sum(dim=1).mean(), rtol=1e-5, atol=1e-5
    )


def test_an_overcomplete_code_is_refused():
    with pytest.raises(ValueError, match="code_dim must be below the 192 inputs"):
        build(code_dim=192)


def test_linear_with_bce_is_a_config_error():
    with pytest.raises(ConfigError, match="linear=true is the PCA case, which needs loss=mse"):
        plugin.parse_config({"linear": True, "loss": "bce"})


def test_trains_through_the_cli(in_tmp):
    options = ["-o", "image_size=8", "-o", "hidden=16", "-o", "code_dim=4"]
    result = CliRunner().invoke(
        app,
        ["train", "ae", *options, "--limit", "64", "-b", "16", "--epochs", "1", "--device", "cpu"],
    )
    assert result.exit_code == 0, result.output
    assert len(list((in_tmp / "runs" / "ae").iterdir())) == 1
