"""DiffAugment's three policies do what Zhao et al. (2020) describe, per image, differentiably,
and draw from the generator they are given; dcgan shows D augmented images when asked."""

from __future__ import annotations

import pytest
import torch

from gentool.api import Batch, DataSpec
from gentool.errors import ConfigError
from gentool.plugins._diffaugment import color, cutout, diff_augment, translation
from gentool.plugins.dcgan import plugin as dcgan
from gentool.training.step import StepContext
from tests.conftest import TINY_DCGAN


def images(batch: int = 6, channels: int = 3, height: int = 16, width: int = 24) -> torch.Tensor:
    return torch.rand(batch, channels, height, width, generator=torch.Generator().manual_seed(1))


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("strength", [1.0, 0.5, 0.3])
def test_colour_follows_the_paper_s_formulas_image_by_image(strength):
    """At strength 1 the paper's ranges; narrower ones shrink each about its identity."""
    x = images()
    generator = seeded()
    brightness = (torch.rand(6, 1, 1, 1, generator=generator) - 0.5) * strength
    saturation = 1 + (torch.rand(6, 1, 1, 1, generator=generator) * 2 - 1) * strength
    contrast = 1 + (torch.rand(6, 1, 1, 1, generator=generator) - 0.5) * strength
    if strength == 1:
        assert saturation.min() >= 0 and saturation.max() <= 2
        assert contrast.min() >= 0.5 and contrast.max() <= 1.5
    expected = []
    for index in range(6):
        image = x[index] + brightness[index]
        grey = image.mean(dim=0, keepdim=True)
        image = (image - grey) * saturation[index] + grey
        image = (image - image.mean()) * contrast[index] + image.mean()
        expected.append(image)
    torch.testing.assert_close(color(x, seeded(), strength), torch.stack(expected))
    torch.testing.assert_close(
        diff_augment(x, ("color",), seeded(), color_strength=strength), torch.stack(expected)
    )


def test_colour_at_full_strength_is_the_paper_s_expression_to_the_last_bit():
    """Runs trained before the strength existed resume exactly only if it is."""
    x = images()
    generator = seeded()
    expected = x + (torch.rand(6, 1, 1, 1, generator=generator) - 0.5)
    grey = expected.mean(dim=1, keepdim=True)
    expected = (expected - grey) * (torch.rand(6, 1, 1, 1, generator=generator) * 2) + grey
    mean = expected.mean(dim=(1, 2, 3), keepdim=True)
    expected = (expected - mean) * (torch.rand(6, 1, 1, 1, generator=generator) + 0.5) + mean
    assert torch.equal(color(x, seeded(), 1.0), expected)


def test_colour_at_strength_zero_leaves_the_images_as_they_are():
    x = images()
    torch.testing.assert_close(color(x, seeded(), 0.0), x, rtol=0, atol=1e-6)


@pytest.mark.parametrize("strength", ["-0.1", "1.5"])
def test_a_colour_strength_outside_0_to_1_is_refused(strength):
    with pytest.raises(ConfigError, match="color_strength"):
        dcgan.parse_config({"diffaugment": "color", "color_strength": strength})


@pytest.mark.parametrize(("height", "width"), [(16, 24), (7, 9)])
def test_translation_moves_each_image_by_whole_pixels_and_fills_with_zero(height, width):
    x = images(height=height, width=width) + 1  # no pixel is 0 before the shift
    moved = translation(x, seeded())
    generator = seeded()
    limit_y, limit_x = int(height / 8 + 0.5), int(width / 8 + 0.5)
    shift_y = torch.randint(-limit_y, limit_y + 1, (6, 1), generator=generator)[:, 0]
    shift_x = torch.randint(-limit_x, limit_x + 1, (6, 1), generator=generator)[:, 0]
    for index in range(6):
        dy, dx = int(shift_y[index]), int(shift_x[index])
        expected = torch.zeros_like(x[index])
        for row in range(height):
            for col in range(width):
                source_row, source_col = row + dy, col + dx
                if 0 <= source_row < height and 0 <= source_col < width:
                    expected[:, row, col] = x[index, :, source_row, source_col]
        torch.testing.assert_close(moved[index], expected, rtol=0, atol=0)
    assert (shift_y != 0).any() or (shift_x != 0).any()


def test_cutout_zeroes_one_square_of_half_the_side_per_image():
    x = images(batch=32, height=16, width=16) + 1
    cut = cutout(x, seeded())
    for index in range(32):
        zero = (cut[index] == 0).all(dim=0)  # (H, W): the cut-out pixels
        rows, cols = zero.any(dim=1).nonzero()[:, 0], zero.any(dim=0).nonzero()[:, 0]
        assert 1 <= len(rows) <= 8 and 1 <= len(cols) <= 8  # clipped by the border at most
        assert zero.sum() == len(rows) * len(cols)  # a rectangle …
        assert (rows.diff() == 1).all() and (cols.diff() == 1).all()  # … in one piece
        edge = (0, 15)
        assert len(rows) == 8 or rows[0] in edge or rows[-1] in edge  # whole unless clipped
        assert len(cols) == 8 or cols[0] in edge or cols[-1] in edge
        torch.testing.assert_close(cut[index][:, ~zero], x[index][:, ~zero], rtol=0, atol=0)


@pytest.mark.parametrize("policy", [("color",), ("translation",), ("cutout",)])
def test_each_policy_passes_gradients_to_the_images(policy):
    x = images().requires_grad_()
    diff_augment(x, policy, seeded()).square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_the_same_generator_state_gives_the_same_augmentation_and_no_policy_none():
    x = images()
    every = ("color", "translation", "cutout")
    first = diff_augment(x, every, seeded(3))
    assert torch.equal(first, diff_augment(x, every, seeded(3)))
    assert not torch.equal(first, diff_augment(x, every, seeded(4)))
    assert diff_augment(x, ()) is x


def test_the_policies_run_in_the_paper_s_order_whatever_the_order_given():
    x = images()
    forward = diff_augment(x, ("color", "translation", "cutout"), seeded())
    backward = diff_augment(x, ("cutout", "translation", "color"), seeded())
    assert torch.equal(forward, backward)


def test_dcgan_shows_d_augmented_images_only_when_asked():
    for policy, augmented in (((), False), (("translation", "cutout"), True)):
        config = dcgan.parse_config({**TINY_DCGAN, "diffaugment": policy})
        model = dcgan.build(config, DataSpec(3, 16, 16))
        seen: list[torch.Tensor] = []
        model.discriminator.register_forward_pre_hook(
            lambda module, args, seen=seen: seen.append(args[0])
        )
        real = torch.rand(8, 3, 16, 16) * 2 - 1
        context = StepContext(model.configure_optimizers(), torch.device("cpu"))
        model.training_step(Batch(images=real), context)
        assert torch.equal(seen[0], real) is not augmented
        assert bool((seen[1] == 0).any()) is augmented  # the fake, with cut-out squares


def test_an_unknown_policy_is_refused_naming_the_choices():
    with pytest.raises(ConfigError, match="diffaugment") as refused:
        dcgan.parse_config({"diffaugment": "color,zoom"})
    assert "color, translation, cutout" in str(refused.value)
    with pytest.raises(ConfigError, match="diffaugment names color more than once"):
        dcgan.parse_config({"diffaugment": "color,cutout,color"})
