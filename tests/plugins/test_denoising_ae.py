"""The denoising AE's defining properties: it learns from corrupted inputs to give back clean
images, so on held-out corrupted images its output is closer to the clean ones than its input."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from gentool.api import Batch, DataSpec
from gentool.cli import app
from gentool.errors import ConfigError
from gentool.plugins.denoising_ae import plugin
from gentool.plugins.denoising_ae.model import DenoisingAE
from gentool.training.step import StepContext
from tests.plugins.autoencoding import faces, train

TINY = {"image_size": 8, "hidden": (16,), "code_dim": 4}


def build(channels=3, **overrides) -> DenoisingAE:
    config = plugin.parse_config({**TINY, **overrides})
    return plugin.build(config, DataSpec(channels, config.image_size, config.image_size))


@pytest.mark.parametrize("channels", [1, 3])
def test_codes_and_reconstructions_have_the_right_shapes_and_range(channels):
    model = build(channels).eval()
    x = torch.rand(5, channels, 8, 8, generator=torch.Generator().manual_seed(0))
    assert model.encode(x).shape == (5, 4)
    reconstructions = model.reconstruct(x)
    assert reconstructions.shape == x.shape
    assert reconstructions.min() >= 0 and reconstructions.max() <= 1


@pytest.mark.parametrize("noise", ["masking", "gaussian"])
def test_on_held_out_images_the_output_is_closer_to_clean_than_the_corrupted_input(
    noise, tiny_cpu_training
):
    torch.manual_seed(0)
    model = build(hidden=(64,), code_dim=32, noise=noise, corruption=0.25, lr=3e-3)
    train(model, faces(256), steps=150)
    clean = faces(64, start=10_000)  # images the model never saw
    corrupted = model.corrupt(clean, generator=torch.Generator().manual_seed(1))
    input_error = (corrupted - clean).square().mean()
    output_error = (model.eval().reconstruct(corrupted) - clean).square().mean()
    assert output_error < 0.5 * input_error


def test_it_denoises_better_than_the_same_autoencoder_trained_on_clean_images(tiny_cpu_training):
    clean = faces(64, start=10_000)
    masked = build(corruption=0.25).corrupt(clean, generator=torch.Generator().manual_seed(1))
    errors = {}
    for corruption in (0.25, 0.0):  # 0: a plain autoencoder, identical otherwise
        torch.manual_seed(0)
        model = build(hidden=(64,), code_dim=32, corruption=corruption, lr=3e-3)
        train(model, faces(256), steps=150)
        errors[corruption] = (model.eval().reconstruct(masked) - clean).square().mean()
    assert errors[0.25] < 0.7 * errors[0.0]  # about 0.013 against 0.030 here


def test_masking_zeroes_each_value_with_probability_p():
    model = build(noise="masking", corruption=0.3)
    ones = torch.ones(64, 3, 8, 8)
    corrupted = model.corrupt(ones, generator=torch.Generator().manual_seed(0))
    assert set(corrupted.unique().tolist()) == {0.0, 1.0}  # erased or kept as is, never rescaled
    assert (corrupted == 0).float().mean().item() == pytest.approx(0.3, abs=0.01)  # 12288 draws


def test_gaussian_noise_has_standard_deviation_sigma_and_stays_in_range():
    model = build(noise="gaussian", corruption=0.1)
    grey = torch.full((64, 3, 8, 8), 0.5)  # 5σ from either end: the clamp almost never acts
    corrupted = model.corrupt(grey, generator=torch.Generator().manual_seed(0))
    assert (corrupted - grey).std().item() == pytest.approx(0.1, rel=0.03)
    assert (corrupted - grey).mean().abs().item() < 0.005
    near_white = model.corrupt(torch.full((64, 3, 8, 8), 0.95))
    assert near_white.min() >= 0 and near_white.max() == 1


def test_the_loss_compares_the_output_on_the_corrupted_input_with_the_clean_input():
    model = build()
    x = faces(8)
    optimizers = model.configure_optimizers()
    torch.manual_seed(5)
    logs = model.training_step(Batch(x), StepContext(optimizers, torch.device("cpu")))
    torch.manual_seed(5)  # the same corruption again
    corrupted = model.corrupt(x.flatten(1))
    assert not torch.equal(corrupted, x.flatten(1))
    output = torch.sigmoid(model.decoder(model.encoder(corrupted)))
    expected = (output - x.flatten(1)).square().sum(dim=1).mean()
    torch.testing.assert_close(logs["loss"].detach(), expected.detach())


def test_reconstruction_adds_no_noise():
    model = build().eval()
    x = faces(8)
    assert torch.equal(model.reconstruct(x), model.reconstruct(x))


def test_erasing_everything_is_a_config_error():
    with pytest.raises(ConfigError, match="must be below 1"):
        plugin.parse_config({"noise": "masking", "corruption": 1.0})


def test_trains_through_the_cli(in_tmp):
    options = ["-o", "image_size=8", "-o", "hidden=16", "-o", "code_dim=4"]
    result = CliRunner().invoke(
        app,
        [
            "train", "denoising-ae", *options,
            "--limit", "64", "-b", "16", "--epochs", "1", "--device", "cpu",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert len(list((in_tmp / "runs" / "denoising-ae").iterdir())) == 1
