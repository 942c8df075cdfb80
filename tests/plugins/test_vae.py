"""The VAE's defining properties: its loss is reconstruction + β·KL with the KL of N(μ, σ²)."""

from __future__ import annotations

import pytest
import torch

from gentool.api import Batch, DataSpec
from gentool.errors import ConfigError
from gentool.plugins.vae import plugin
from gentool.plugins.vae.model import VAE
from gentool.synthetic import make_faces
from gentool.training.step import StepContext

TINY = {"image_size": 16, "latent_dim": 4, "features": 4}


def build(image_size=16, channels=3, **overrides) -> VAE:
    config = plugin.parse_config({**TINY, "image_size": image_size, **overrides})
    return plugin.build(config, DataSpec(channels, image_size, image_size))


def images(count=6, channels=3, size=16, seed=0):
    return torch.rand(count, channels, size, size, generator=torch.Generator().manual_seed(seed))


def step(model: VAE, x: torch.Tensor) -> dict[str, torch.Tensor]:
    optimizers = model.configure_optimizers()
    return model.training_step(Batch(x), StepContext(optimizers, torch.device("cpu")))


@pytest.mark.parametrize("image_size", [16, 32, 64])
@pytest.mark.parametrize("channels", [1, 3])
def test_shapes_of_samples_codes_and_reconstructions(image_size, channels):
    model = build(image_size, channels).eval()
    x = images(3, channels, image_size)
    assert model.encode(x).shape == (3, 4)
    assert model.reconstruct(x).shape == x.shape
    assert model.sample(5).shape == (5, channels, image_size, image_size)


def test_samples_from_the_prior_decode_to_the_data_range():
    model = build().eval()
    first = model.sample(16, generator=torch.Generator().manual_seed(1))
    again = model.sample(16, generator=torch.Generator().manual_seed(1))
    assert first.min() >= 0 and first.max() <= 1 and torch.equal(first, again)


def test_the_loss_is_reconstruction_plus_beta_times_kl():
    torch.manual_seed(0)
    logs = step(build(beta=2.5), images())
    assert set(logs) == {"loss", "recon", "kl"}
    torch.testing.assert_close(logs["loss"].detach(), logs["recon"] + 2.5 * logs["kl"])


def test_beta_zero_is_a_plain_autoencoder_loss():
    model = build(beta=0.0)
    x = images()
    torch.manual_seed(3)
    logs = step(model, x)
    assert torch.equal(logs["loss"].detach(), logs["recon"])
    # The same noise through an autoencoder-style loss: decode the sampled code, score it.
    torch.manual_seed(3)
    mu, logvar = model.encoder(x)
    z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(
        model.decoder(z), x, reduction="sum"
    ) / len(x)
    torch.testing.assert_close(logs["loss"].detach(), expected.detach())


def test_the_logged_kl_matches_a_float64_reference():
    model = build()
    x = images()
    logs = step(model, x)
    mu, logvar = (value.double() for value in model.encoder(x))
    expected = 0.5 * (mu.square() + logvar.exp() - 1 - logvar).sum(dim=1).mean()
    torch.testing.assert_close(logs["kl"].double(), expected.detach(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("recon_loss", ["bce", "mse"])
def test_training_improves_reconstructions(recon_loss):
    torch.manual_seed(0)
    model = build(recon_loss=recon_loss, latent_dim=8, features=8, lr=3e-3)
    optimizer = model.configure_optimizers()["vae"]
    context = StepContext({"vae": optimizer}, torch.device("cpu"))
    x = torch.from_numpy(make_faces(16, 16)).permute(0, 3, 1, 2).float() / 255

    def reconstruction_error() -> float:
        model.eval()
        error = (model.reconstruct(x) - x).square().mean().item()
        model.train()
        return error

    before = reconstruction_error()
    for _ in range(40):
        optimizer.zero_grad()
        model.training_step(Batch(x), context)["loss"].backward()
        optimizer.step()
    assert reconstruction_error() < 0.9 * before


def test_bad_sizes_are_config_errors():
    with pytest.raises(ConfigError, match="power of two"):
        plugin.parse_config({"image_size": 24})
    with pytest.raises(ConfigError, match="must be one of bce, mse"):
        plugin.parse_config({"recon_loss": "l1"})
