"""gentool's conformance kit, and the gradient penalty's defining property."""

import torch
from gentool.api import DataSpec
from gentool.testing import parametrize_with_checks

from gentool_wgan_gp import plugin


@parametrize_with_checks([plugin])
def test_plugin(plugin, check):
    check(plugin)


class LinearCritic(torch.nn.Module):
    """D(x) = scale · ⟨u, x⟩ with ‖u‖ = 1, so ‖∇D‖ = scale everywhere."""

    def __init__(self, size: int, scale: float) -> None:
        super().__init__()
        direction = torch.randn(size)
        self.direction = direction / direction.norm()
        self.scale = scale

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.scale * images.flatten(1) @ self.direction


def test_the_penalty_is_zero_exactly_for_unit_gradient_norms():
    model = plugin.build(plugin.parse_config(plugin.test_config), DataSpec(3, 16, 16))
    real, fake = torch.randn(4, 3, 16, 16), torch.randn(4, 3, 16, 16)
    model.critic = LinearCritic(3 * 16 * 16, scale=1.0)
    assert model.gradient_penalty(real, fake).item() < 1e-10
    model.critic = LinearCritic(3 * 16 * 16, scale=3.0)  # penalty (3 − 1)² = 4
    torch.testing.assert_close(model.gradient_penalty(real, fake), torch.tensor(4.0))
