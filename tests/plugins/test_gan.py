"""gan follows Goodfellow et al. (2014): MLPs, BCE with logits, the non-saturating G loss, and
Algorithm 1's k D steps per G step, each network stepped only in its own block."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from typer.testing import CliRunner

from gentool.api import Batch, DataSpec
from gentool.cli import app
from gentool.errors import ConfigError
from gentool.plugins.gan import plugin
from gentool.plugins.gan.model import GAN
from gentool.training.step import StepContext
from tests.plugins.gan_checks import WatchedContext, assert_bce_losses

# The plugin's own tiny config: 16×16 images, narrow layers; each test runs in well under a second.
TINY_GAN = dict(plugin.test_config)


def build(image_size=16, channels=3, **overrides) -> GAN:
    config = plugin.parse_config({**TINY_GAN, "image_size": image_size, **overrides})
    return plugin.build(config, DataSpec(channels, image_size, image_size))


def real_batch(model: GAN, size: int = 8) -> Batch:
    channels, height, width = model.generator.image_shape
    return Batch(images=torch.rand(size, channels, height, width) * 2 - 1)


def parameter_names(module: nn.Module, prefix: str) -> set[str]:
    return {f"{prefix}.{name}" for name, _ in module.named_parameters()}


@pytest.mark.parametrize("image_size", [8, 16, 20])
@pytest.mark.parametrize("channels", [1, 3])
def test_generator_and_discriminator_shapes(image_size, channels):
    model = build(image_size, channels)
    images = model.sample(2)
    assert images.shape == (2, channels, image_size, image_size)
    assert model.discriminator(images).shape == (2,)


def test_networks_are_mlps_with_leaky_relu_and_a_tanh_image():
    model = build(16, 3, latent_dim=8, g_hidden=(16, 32), d_hidden=(32, 16))
    g_layers = list(model.generator.net)
    d_layers = list(model.discriminator.net)
    g_linear = [layer for layer in g_layers if isinstance(layer, nn.Linear)]
    d_linear = [layer for layer in d_layers if isinstance(layer, nn.Linear)]
    assert [(layer.in_features, layer.out_features) for layer in g_linear] == [
        (8, 16),
        (16, 32),
        (32, 3 * 16 * 16),
    ]
    assert [(layer.in_features, layer.out_features) for layer in d_linear] == [
        (3 * 16 * 16, 32),
        (32, 16),
        (16, 1),
    ]
    # Linear, LeakyReLU(0.2), ..., Linear, then tanh for G's image and nothing for D's logit.
    assert isinstance(g_layers[-1], nn.Tanh) and isinstance(d_layers[-1], nn.Linear)
    hidden_activations = [g_layers[1], g_layers[3], d_layers[1], d_layers[3]]
    assert all(
        type(layer) is nn.LeakyReLU and layer.negative_slope == 0.2 for layer in hidden_activations
    )
    assert len(g_layers) == 6 and len(d_layers) == 5


def test_samples_lie_in_the_tanh_range_and_repeat_with_the_generator_seed():
    model = build().eval()
    first = model.sample(8, generator=torch.Generator().manual_seed(3))
    again = model.sample(8, generator=torch.Generator().manual_seed(3))
    other = model.sample(8, generator=torch.Generator().manual_seed(4))
    assert first.min() >= -1 and first.max() <= 1
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_sampling_refuses_labels_it_cannot_use():
    with pytest.raises(ValueError, match="unconditional"):
        build().sample(2, labels=torch.zeros(2, dtype=torch.int64))


def test_each_network_has_its_own_adam_with_the_configured_settings():
    model = build(lr=1e-3, beta1=0.4, beta2=0.99)
    optimizers = model.configure_optimizers()
    assert set(optimizers) == {"d", "g"}
    for name, network in (("d", model.discriminator), ("g", model.generator)):
        optimizer = optimizers[name]
        assert isinstance(optimizer, torch.optim.Adam)
        group = optimizer.param_groups[0]
        assert (group["lr"], group["betas"]) == (1e-3, (0.4, 0.99))
        stepped = {id(p) for group in optimizer.param_groups for p in group["params"]}
        assert stepped == {id(p) for p in network.parameters()}


def test_d_is_stepped_only_in_the_d_block_and_g_only_in_the_g_block():
    torch.manual_seed(0)
    model = build()
    context = WatchedContext(model)
    batch = real_batch(model)
    for _ in range(2):  # the second step starts with the first's gradients still on D
        model.training_step(batch, context)
    d_params = parameter_names(model.discriminator, "discriminator")
    g_params = parameter_names(model.generator, "generator")
    assert [name for name, _ in context.steps] == ["d", "g", "d", "g"]
    for name, changed in context.steps:
        assert changed == (d_params if name == "d" else g_params), name
    assert context.moved_between_steps == set()  # only optimizer steps move weights
    assert context.stale_gradients == set()  # each block zeroes its network's gradients first


def test_one_step_changes_every_parameter_and_logs_finite_values():
    torch.manual_seed(0)
    model = build()
    before = {name: value.clone() for name, value in model.named_parameters()}
    logs = model.training_step(
        real_batch(model), StepContext(model.configure_optimizers(), torch.device("cpu"))
    )
    assert set(logs) == {"loss_d", "loss_g", "d_real", "d_fake"}
    assert all(value.shape == () and torch.isfinite(value) for value in logs.values())
    assert not any(value.requires_grad for value in logs.values())
    assert 0 < logs["d_real"] < 1 and 0 < logs["d_fake"] < 1
    unchanged = [
        name for name, value in model.named_parameters() if torch.equal(value, before[name])
    ]
    assert unchanged == []


def test_d_steps_makes_k_discriminator_steps_with_fresh_noise_per_generator_step():
    torch.manual_seed(0)
    model = build(d_steps=3)
    context = WatchedContext(model)
    noises = []
    model.generator.register_forward_pre_hook(lambda module, args: noises.append(args[0]))
    model.training_step(real_batch(model), context)
    assert [name for name, _ in context.steps] == ["d", "d", "d", "g"]
    assert len(noises) == 4  # one draw of z for each D step, and one for the G step
    assert all(not torch.equal(a, b) for i, a in enumerate(noises) for b in noises[i + 1 :])


def test_losses_are_bce_with_logits_and_g_minimises_minus_log_d_of_g_z():
    torch.manual_seed(0)
    model = build()
    assert_bce_losses(model, real_batch(model))


def test_a_confident_discriminator_gives_the_generator_a_large_loss_not_a_vanishing_one():
    # D says "fake" to everything: D(x) = sigmoid(-8) ≈ 0.0003. The minimax loss log(1 − D(G(z)))
    # would be ≈ −0.0003 and flat (paper §3); the non-saturating −log D(G(z)) is ≈ 8.
    model = build()
    with torch.no_grad():
        for parameter in model.discriminator.parameters():
            parameter.zero_()
        model.discriminator.net[-1].bias.fill_(-8.0)
    optimizers = model.configure_optimizers()
    optimizers["d"].param_groups[0]["lr"] = 0.0  # keep D as set through its own block
    logs = model.training_step(real_batch(model), StepContext(optimizers, torch.device("cpu")))
    assert logs["loss_g"].item() == pytest.approx(F.softplus(torch.tensor(8.0)).item(), rel=1e-6)
    # D's loss: −log D(x) − log(1 − D(G(z))) = softplus(8) + softplus(−8).
    loss_d = F.softplus(torch.tensor(8.0)) + F.softplus(torch.tensor(-8.0))
    assert logs["loss_d"].item() == pytest.approx(loss_d.item(), rel=1e-6)
    assert logs["d_real"].item() == pytest.approx(torch.sigmoid(torch.tensor(-8.0)).item())
    assert logs["d_fake"].item() == pytest.approx(torch.sigmoid(torch.tensor(-8.0)).item())


@pytest.mark.parametrize(
    ("values", "text"),
    [
        ({"image_size": 4}, "'image_size' of gan must be int >= 8"),
        ({"g_hidden": ()}, "g_hidden needs at least one hidden layer width"),
        ({"d_hidden": (32, 0)}, "'d_hidden' of gan must be list of int >= 1"),
        ({"d_steps": 0}, r"'d_steps' of gan must be int in \[1, 100\]"),
    ],
)
def test_bad_configs_are_refused(values, text):
    with pytest.raises(ConfigError, match=text):
        plugin.parse_config(values)


def test_data_of_another_size_is_refused():
    config = plugin.parse_config({**TINY_GAN, "image_size": 32})
    with pytest.raises(ValueError, match="configured for 32×32 images, the data is 16×16"):
        plugin.build(config, DataSpec(3, 16, 16))


def test_trains_through_the_cli(in_tmp):
    tiny = [arg for key, value in TINY_GAN.items() for arg in ("-o", f"{key}={_cli(value)}")]
    args = ["--limit", "64", "-b", "16", "--epochs", "1", "--device", "cpu", "--run-dir", "run"]
    result = CliRunner().invoke(app, ["train", "gan", *tiny, "-o", "d_steps=2", *args])
    assert result.exit_code == 0, result.output
    assert (in_tmp / "run" / "samples" / "epoch_0001.png").exists()


def _cli(value) -> str:
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
