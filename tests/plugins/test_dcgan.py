"""DCGAN follows every architectural and training rule of Radford et al. (2015)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gentool.api import Batch, DataSpec
from gentool.errors import ConfigError
from gentool.kernels import ConvTransposeBNReLU
from gentool.plugins.dcgan import plugin
from gentool.plugins.dcgan.model import DCGAN
from gentool.training.step import StepContext
from tests.conftest import TINY_DCGAN


def build(image_size=16, channels=3, **overrides) -> DCGAN:
    config = plugin.parse_config({**TINY_DCGAN, "image_size": image_size, **overrides})
    return plugin.build(config, DataSpec(channels, image_size, image_size))


def layers(module: nn.Module) -> list[nn.Module]:
    return [layer for layer in module.modules() if not list(layer.children())]


@pytest.mark.parametrize("image_size", [16, 32, 64, 128])
@pytest.mark.parametrize("channels", [1, 3])
def test_generator_and_discriminator_shapes(image_size, channels):
    model = build(image_size, channels)
    images = model.sample(2)
    assert images.shape == (2, channels, image_size, image_size)
    assert model.discriminator(images).shape == (2,)


def test_default_generator_follows_the_paper_at_64():
    config = plugin.parse_config()
    model = plugin.build(config, DataSpec(3, 64, 64))
    shapes, x = [], torch.randn(2, 100)
    x = x[:, :, None, None]
    for block in model.generator.net:
        x = block(x)
        if isinstance(block, (ConvTransposeBNReLU, nn.ConvTranspose2d)):
            shapes.append(tuple(x.shape[1:]))
    assert shapes == [(512, 4, 4), (256, 8, 8), (128, 16, 16), (64, 32, 32), (3, 64, 64)]


def test_every_generator_block_but_the_output_is_the_fused_module():
    blocks = list(build(32).generator.net)
    assert all(isinstance(block, ConvTransposeBNReLU) for block in blocks[:-2])
    assert isinstance(blocks[-2], nn.ConvTranspose2d) and isinstance(blocks[-1], nn.Tanh)
    assert [block.conv.stride for block in blocks[:-2]] == [(1, 1), (2, 2), (2, 2)]


def test_batchnorm_everywhere_except_generator_output_and_discriminator_input():
    model = build(32)
    generator, discriminator = layers(model.generator), layers(model.discriminator)
    # Generator: every transposed convolution but the last is followed by BatchNorm.
    g_convs = [i for i, layer in enumerate(generator) if isinstance(layer, nn.ConvTranspose2d)]
    assert all(isinstance(generator[i + 1], nn.BatchNorm2d) for i in g_convs[:-1])
    assert not isinstance(generator[g_convs[-1] + 1], nn.BatchNorm2d)
    # Discriminator: every strided convolution but the first is followed by BatchNorm.
    d_convs = [i for i, layer in enumerate(discriminator) if isinstance(layer, nn.Conv2d)]
    assert not isinstance(discriminator[d_convs[0] + 1], nn.BatchNorm2d)
    assert all(isinstance(discriminator[i + 1], nn.BatchNorm2d) for i in d_convs[1:-1])


def test_activations_pooling_and_fully_connected_layers():
    model = build(64)
    generator, discriminator = layers(model.generator), layers(model.discriminator)
    g_activations = [
        type(layer) for layer in generator if isinstance(layer, (nn.ReLU, nn.Tanh, nn.LeakyReLU))
    ]
    assert g_activations == [nn.ReLU] * 4 + [nn.Tanh]
    d_activations = [
        layer for layer in discriminator if isinstance(layer, (nn.ReLU, nn.LeakyReLU, nn.Sigmoid))
    ]
    assert all(
        isinstance(layer, nn.LeakyReLU) and layer.negative_slope == 0.2 for layer in d_activations
    )
    assert len(d_activations) == 4
    everything = generator + discriminator
    assert not any(
        isinstance(layer, (nn.Linear, nn.MaxPool2d, nn.AvgPool2d, nn.Upsample))
        for layer in everything
    )
    d_convs = [layer for layer in discriminator if isinstance(layer, nn.Conv2d)]
    assert [layer.stride for layer in d_convs] == [(2, 2)] * 4 + [(1, 1)]
    assert d_convs[-1].out_channels == 1  # D ends in a convolution to one logit


def test_initialisation_statistics():
    torch.manual_seed(0)
    model = build(64, g_features=64, d_features=64)
    conv_weights = torch.cat(
        [
            layer.weight.flatten()
            for layer in model.modules()
            if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d))
        ]
    )
    assert abs(conv_weights.mean().item()) < 1e-3
    assert conv_weights.std().item() == pytest.approx(0.02, rel=0.02)
    norms = [layer for layer in model.modules() if isinstance(layer, nn.BatchNorm2d)]
    scales = torch.cat([layer.weight for layer in norms])
    assert scales.mean().item() == pytest.approx(1.0, abs=0.005)
    assert scales.std().item() == pytest.approx(0.02, rel=0.15)
    assert all(torch.count_nonzero(layer.bias) == 0 for layer in norms)


def test_adam_with_the_paper_settings():
    optimizers = build().configure_optimizers()
    assert set(optimizers) == {"d", "g"}
    for optimizer in optimizers.values():
        assert isinstance(optimizer, torch.optim.Adam)
        group = optimizer.param_groups[0]
        assert (group["lr"], group["betas"]) == (2e-4, (0.5, 0.999))


def test_samples_lie_in_the_tanh_range_and_repeat_with_the_generator_seed():
    model = build().eval()
    first = model.sample(8, generator=torch.Generator().manual_seed(3))
    again = model.sample(8, generator=torch.Generator().manual_seed(3))
    other = model.sample(8, generator=torch.Generator().manual_seed(4))
    assert first.min() >= -1 and first.max() <= 1
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_one_training_step_updates_each_network_with_its_own_optimizer():
    torch.manual_seed(0)
    model = build()
    optimizers = model.configure_optimizers()
    d_params = {id(p) for p in model.discriminator.parameters()}
    assert {id(p) for group in optimizers["d"].param_groups for p in group["params"]} == d_params
    before = {name: value.clone() for name, value in model.named_parameters()}
    batch = Batch(images=torch.rand(4, 3, 16, 16) * 2 - 1)
    logs = model.training_step(batch, StepContext(optimizers, torch.device("cpu")))
    assert set(logs) == {"loss_d", "loss_g", "d_real", "d_fake"}
    assert all(torch.isfinite(value) for value in logs.values())
    unchanged = [
        name for name, value in model.named_parameters() if torch.equal(value, before[name])
    ]
    assert unchanged == []


def test_image_size_must_be_a_power_of_two_of_at_least_16():
    with pytest.raises(ConfigError, match="power of two"):
        plugin.parse_config({"image_size": 48})
    with pytest.raises(ConfigError, match=r"must be int >= 16"):
        plugin.parse_config({"image_size": 8})


def test_data_of_another_size_is_refused():
    config = plugin.parse_config({"image_size": 32})
    with pytest.raises(ValueError, match="configured for 32×32 images, the data is 16×16"):
        plugin.build(config, DataSpec(3, 16, 16))


def test_fused_block_is_a_drop_in_for_the_unfused_layers():
    torch.manual_seed(0)
    fused = ConvTransposeBNReLU(6, 4, 4, 2, 1)
    plain = nn.Sequential(
        nn.ConvTranspose2d(6, 4, 4, 2, 1, bias=False), nn.BatchNorm2d(4), nn.ReLU()
    )
    assert fused.state_dict().keys() == plain.state_dict().keys()
    plain.load_state_dict(fused.state_dict())
    x = torch.randn(3, 6, 5, 5)
    assert torch.equal(fused(x), plain(x))
    assert torch.equal(fused.bn.running_mean, plain[1].running_mean)
