"""The convolutional autoencoder: its output has the input's shape at every size, and it learns."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from gentool.api import Batch, DataSpec
from gentool.cli import app
from gentool.errors import ConfigError
from gentool.plugins.conv_ae import plugin
from gentool.plugins.conv_ae.model import ConvAutoencoder
from gentool.training.step import StepContext
from tests.plugins.autoencoding import faces

TINY = {"image_size": 8, "features": 4, "code_dim": 4}


def build(image_size=8, channels=3, **overrides) -> ConvAutoencoder:
    config = plugin.parse_config({**TINY, "image_size": image_size, **overrides})
    return plugin.build(config, DataSpec(channels, image_size, image_size))


@pytest.mark.parametrize("image_size", [8, 16, 32, 64, 128])
@pytest.mark.parametrize("channels", [1, 3])
def test_reconstructions_have_the_input_shape_at_every_size(image_size, channels):
    model = build(image_size, channels).eval()
    x = torch.rand(2, channels, image_size, image_size, generator=torch.Generator().manual_seed(0))
    reconstructions = model.reconstruct(x)
    assert reconstructions.shape == x.shape
    assert reconstructions.min() >= 0 and reconstructions.max() <= 1
    assert model.encode(x).shape == (2, TINY["code_dim"])


def test_hidden_up_blocks_are_the_fused_conv_transpose_bn_relu():
    from gentool.kernels import ConvTransposeBNReLU

    blocks = [m for m in build(32).decoder.modules() if isinstance(m, ConvTransposeBNReLU)]
    assert len(blocks) == 2  # 4×4 → 8×8 → 16×16; the last, to 32×32, ends in a sigmoid


@pytest.mark.parametrize("loss", ["mse", "bce"])
def test_training_beats_predicting_the_mean_image(loss):
    torch.manual_seed(0)
    model = build(16, features=16, code_dim=16, lr=3e-3, loss=loss)
    optimizer = model.configure_optimizers()["conv-ae"]
    context = StepContext({"conv-ae": optimizer}, torch.device("cpu"))
    x = faces(64, 16)
    for _ in range(60):
        optimizer.zero_grad()
        model.training_step(Batch(x), context)["loss"].backward()
        optimizer.step()
    model.eval()
    error = (model.reconstruct(x) - x).square().mean().item()
    mean_image_error = (x.mean(dim=0, keepdim=True) - x).square().mean().item()
    assert error < 0.7 * mean_image_error


def test_sizes_that_are_not_powers_of_two_are_config_errors():
    with pytest.raises(ConfigError, match="power of two"):
        plugin.parse_config({"image_size": 24})
    with pytest.raises(ConfigError, match="must be one of mse, bce"):
        plugin.parse_config({"loss": "l1"})


def test_trains_through_the_cli(in_tmp):
    args = [f"{key}={value}" for key, value in TINY.items()]
    options = [part for arg in args for part in ("-o", arg)]
    result = CliRunner().invoke(
        app,
        [
            "train",
            "conv-ae",
            *options,
            "--limit",
            "32",
            "-b",
            "16",
            "--epochs",
            "1",
            "--device",
            "cpu",
            "--run-dir",
            "run",
        ],
    )
    assert result.exit_code == 0, result.output
    assert (in_tmp / "run" / "metrics.jsonl").exists()
