"""How the kit exercises a plugin's model: built tiny on the CPU for 3-channel data (labelled
with three classes when the plugin is conditional), fed random images in its value range, trained
a step and sampled as gentool trains and samples."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from gentool.api import Batch, DataSpec, ModelPlugin
from gentool.testing.rules import CheckFailed

if TYPE_CHECKING:
    import torch

CHECK_CLASSES = ("first", "second", "third")
CHECK_BATCH = 8
CHECK_IMAGE_SIZE = 16  # for plugins whose config fixes no image size


def for_test_config(plugin: ModelPlugin) -> ModelPlugin:
    """`plugin` with the capabilities of its test_config (`ModelPlugin.capabilities_for`)."""
    return plugin.for_config(plugin.parse_config(plugin.test_config))


def build(
    plugin: ModelPlugin,
    seed: int = 0,
    changes: Mapping[str, Any] | None = None,
    *,
    labelled: bool = False,
) -> tuple[torch.nn.Module, DataSpec]:
    """The model of the plugin's test_config (with `changes`), seeded, and its data's spec:
    labelled for conditional plugins, and for others when `labelled` (gentool trains any model
    on labelled data, and gives it the labels)."""
    import torch

    from gentool.models import image_size_of

    config = plugin.parse_config({**plugin.test_config, **(changes or {})})
    size = image_size_of(config) or CHECK_IMAGE_SIZE
    classes = CHECK_CLASSES if plugin.capabilities.conditional or labelled else ()
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


def sample(
    plugin: ModelPlugin,
    model: Any,
    spec: DataSpec,
    *,
    seed: int,
    labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """Five samples, drawn as gentool draws them (the sampler behind every command)."""
    from gentool.sampling import draw

    with refused_as_failure():
        return draw(model, plugin, spec, 5, seed=seed, labels=labels)


@contextmanager
def refused_as_failure() -> Iterator[None]:
    """What gentool would refuse of a plugin (a PluginError), the kit fails."""
    from gentool.errors import PluginError

    try:
        yield
    except PluginError as error:
        raise CheckFailed(str(error)) from error


def class_labels(spec: DataSpec, count: int) -> torch.Tensor | None:
    """The classes in turn, as gentool labels images it has no labels for; None without
    classes."""
    import torch

    return torch.arange(count) % spec.num_classes if spec.class_names else None


def encode(plugin: ModelPlugin, model: Any, images: torch.Tensor, spec: DataSpec) -> torch.Tensor:
    """Codes of `images`, as `gentool encode` gets them (labelled for conditional models)."""
    from gentool.model_calls import call_encode
    from gentool.sampling import evaluating

    labels = class_labels(spec, images.shape[0])
    with evaluating(model), refused_as_failure():
        return call_encode(model, plugin, images, labels=labels)


def reconstruct(
    plugin: ModelPlugin, model: Any, images: torch.Tensor, spec: DataSpec
) -> torch.Tensor:
    """Reconstructions of `images`, as `gentool reconstruct` and `eval` get them."""
    from gentool.model_calls import call_reconstruct
    from gentool.sampling import evaluating

    labels = class_labels(spec, images.shape[0])
    with evaluating(model), refused_as_failure():
        return call_reconstruct(model, plugin, images, labels=labels)


def prior_codes(
    plugin: ModelPlugin, model: Any, spec: DataSpec, count: int, *, seed: int
) -> torch.Tensor:
    """`count` codes of the model's prior, as `gentool interpolate` draws them."""
    import torch

    from gentool.model_calls import call_sample_latent
    from gentool.sampling import evaluating

    generator = torch.Generator().manual_seed(seed)
    labels = class_labels(spec, count)
    with evaluating(model), refused_as_failure():
        return call_sample_latent(model, plugin, count, labels=labels, generator=generator)


def decode(
    plugin: ModelPlugin, model: Any, codes: torch.Tensor, labels: torch.Tensor | None
) -> torch.Tensor:
    """Images of `codes`, as `gentool interpolate` and `gentool.load(...).decode` get them."""
    from gentool.model_calls import call_decode
    from gentool.sampling import evaluating

    with evaluating(model), refused_as_failure():
        return call_decode(model, plugin, codes, labels=labels)


def train_once(plugin: ModelPlugin, model: Any, spec: DataSpec) -> dict[str, torch.Tensor]:
    """One training step, as the trainer takes it; what it logged."""
    import torch

    from gentool.training.step import StepContext, optimizers_of, phases_of, train_step

    context = StepContext(optimizers_of(model, plugin), torch.device("cpu"))
    phases = phases_of(model, plugin)
    context.enter_phase(phases[0] if phases else None)
    return train_step(model, random_batch(plugin, spec), context, plugin)


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
                        f"parameter {name} is in optimizers {other!r} and {optimizer_name!r}: "
                        "give each parameter to one optimizer, or train them in phases()"
                    )
                owners.setdefault(name, set()).add(optimizer_name)
    return owners


def check_images(what: str, images: Any, shape: tuple[int, ...], plugin: ModelPlugin) -> None:
    import torch

    if not isinstance(images, torch.Tensor) or tuple(images.shape) != shape:
        got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise CheckFailed(
            f"{what} returned {got}, expected a tensor of shape {tuple(shape)}: return one "
            "(C, H, W) image per input, as the DataSpec gives C, H and W"
        )
    if not images.is_floating_point():
        raise CheckFailed(
            f"{what} returned {images.dtype}, expected floating point: return the network's "
            "output, not pixels"
        )
    low, high = plugin.value_range
    if not torch.isfinite(images).all() or images.min() < low or images.max() > high:
        raise CheckFailed(
            f"{what} returned values in [{images.min().item():.3g}, {images.max().item():.3g}], "
            f"outside the value range [{low}, {high}]: end the network with tanh for (-1, 1) "
            "or sigmoid for (0, 1), and set value_range to match"
        )
