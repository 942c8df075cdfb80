"""How the kit exercises a plugin's model: built tiny on the CPU for 3-channel data (labelled
with three classes when the plugin is conditional), fed random images in its value range, trained
a step and sampled as gentool trains and samples."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from gentool.api import Batch, DataSpec, ModelPlugin
from gentool.testing.rules import CheckFailed

if TYPE_CHECKING:
    import torch

CHECK_CLASSES = ("first", "second", "third")
CHECK_BATCH = 8
CHECK_IMAGE_SIZE = 16  # for plugins whose config fixes no image size


def build(
    plugin: ModelPlugin, seed: int = 0, changes: Mapping[str, Any] | None = None
) -> tuple[torch.nn.Module, DataSpec]:
    """The model of the plugin's test_config (with `changes`), seeded, and its data's spec."""
    import torch

    from gentool.models import image_size_of

    config = plugin.parse_config({**plugin.test_config, **(changes or {})})
    size = image_size_of(config) or CHECK_IMAGE_SIZE
    classes = CHECK_CLASSES if plugin.capabilities.conditional else ()
    spec = DataSpec(channels=3, height=size, width=size, class_names=classes)
    torch.manual_seed(seed)
    return plugin.build(config, spec), spec


def random_batch(plugin: ModelPlugin, spec: DataSpec) -> Batch:
    import torch

    generator = torch.Generator().manual_seed(7)
    low, high = plugin.value_range
    shape = (CHECK_BATCH, spec.channels, spec.height, spec.width)
    images = low + (high - low) * torch.rand(shape, generator=generator)
    labels = None
    if spec.class_names:
        labels = torch.arange(CHECK_BATCH) % spec.num_classes
    return Batch(images=images, labels=labels)


def sample(plugin: ModelPlugin, model: Any, spec: DataSpec, *, seed: int) -> torch.Tensor:
    """Five samples, drawn as gentool draws them (the sampler behind every command)."""
    from gentool.errors import PluginError
    from gentool.sampling import draw

    try:
        return draw(model, plugin, spec, 5, seed=seed)
    except PluginError as error:  # what gentool would refuse, the kit fails
        raise CheckFailed(str(error)) from error


def train_once(plugin: ModelPlugin, model: Any, spec: DataSpec) -> None:
    import torch

    from gentool.training.step import StepContext, optimizers_of, train_step

    context = StepContext(optimizers_of(model, plugin), torch.device("cpu"))
    train_step(model, random_batch(plugin, spec), context, plugin)


def parameter_owners(
    model: Any, optimizers: Mapping[str, Any], *, phased: bool
) -> dict[str, set[str]]:
    """The optimizers that step each named parameter.

    Networks that train side by side (a GAN's) must not share a parameter between optimizers;
    phases, which run one after another, may (a fine-tune phase steps what pretraining trained).
    """
    name_of = {id(value): name for name, value in model.named_parameters()}
    owners: dict[str, set[str]] = {}
    for optimizer_name, optimizer in optimizers.items():
        for group in optimizer.param_groups:
            for parameter in group["params"]:
                name = name_of.get(id(parameter), "<a tensor that is not a model parameter>")
                if name in owners and not phased:
                    (other,) = owners[name]
                    raise CheckFailed(
                        f"parameter {name} is in optimizers {other!r} and {optimizer_name!r}"
                    )
                owners.setdefault(name, set()).add(optimizer_name)
    return owners


def check_images(what: str, images: Any, shape: tuple[int, ...], plugin: ModelPlugin) -> None:
    import torch

    if not isinstance(images, torch.Tensor) or tuple(images.shape) != shape:
        got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise CheckFailed(f"{what} returned {got}, expected a tensor of shape {shape}")
    if not images.is_floating_point():
        raise CheckFailed(f"{what} returned {images.dtype}, expected floating point")
    low, high = plugin.value_range
    if not torch.isfinite(images).all() or images.min() < low or images.max() > high:
        raise CheckFailed(
            f"{what} returned values in [{images.min().item():.3g}, {images.max().item():.3g}], "
            f"outside the value range [{low}, {high}]"
        )
