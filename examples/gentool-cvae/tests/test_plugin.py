"""gentool's conformance kit, and what makes the VAE conditional."""

import pytest
import torch
from gentool.api import DataSpec
from gentool.testing import CheckFailed, checks_for, parametrize_with_checks

from gentool_cvae import plugin

SPEC = DataSpec(1, 8, 8, class_names=("zero", "one", "two"))


@parametrize_with_checks([plugin])
def test_plugin(plugin, check):
    check(plugin)


def model():
    torch.manual_seed(0)
    return plugin.build(plugin.parse_config(plugin.test_config), SPEC).eval()


def test_the_same_code_decodes_to_another_image_in_another_class():
    cvae = model()
    z = torch.randn(2, 4)
    first = cvae.decode(z, labels=torch.tensor([0, 0]))
    other = cvae.decode(z, labels=torch.tensor([1, 1]))
    assert not torch.allclose(first, other)


def test_a_decoder_that_ignores_the_label_fails_the_kit(monkeypatch):
    from gentool_cvae.model import ConditionalVAE

    seeing = ConditionalVAE._logits
    blind = lambda self, z, labels: seeing(self, z, torch.zeros_like(labels))  # noqa: E731
    monkeypatch.setattr(ConditionalVAE, "_logits", blind)
    (check,) = [check for check in checks_for(plugin) if check.name == "output_depends_on_label"]
    with pytest.raises(CheckFailed, match="the label is ignored"):
        check(plugin)


def test_unlabelled_data_is_refused_with_the_reason():
    with pytest.raises(ValueError, match="train it on labelled data"):
        plugin.build(plugin.parse_config(plugin.test_config), DataSpec(1, 8, 8))
