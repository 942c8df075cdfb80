"""Every call gentool makes into a plugin's model after building it, other than training.

Commands, evaluation, the trainer's grids and the conformance kit all call a model through
these functions, so that a plugin that passes the kit is called by gentool exactly as the kit
called it: in eval mode without gradients (the caller's `evaluating` block), with labels for
conditional models and without them for the others (an autoencoder's `encode(x)` may take none),
and with what it returns checked before anything uses it.

A conditional model given no labels where it needs them is a one-line error that names the
plugin and the option that supplies them (`supplied_by`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch

from gentool.api import ModelPlugin
from gentool.errors import GentoolError, PluginError
from gentool.models import calling


def call_sample(
    model: torch.nn.Module,
    plugin: ModelPlugin,
    n: int,
    *,
    labels: torch.Tensor | None,
    generator: torch.Generator,
    supplied_by: str = "--label",
) -> torch.Tensor:
    """`model.sample(n, labels=..., generator=...)`: every model's `sample` takes both."""
    labels = _labels(plugin, "sample", labels, supplied_by).get("labels")
    with calling(plugin, "sample"):
        return model.sample(n, labels=labels, generator=generator)


def call_sample_latent(
    model: torch.nn.Module,
    plugin: ModelPlugin,
    n: int,
    *,
    labels: torch.Tensor | None,
    generator: torch.Generator,
    supplied_by: str = "--label",
) -> torch.Tensor:
    """`model.sample_latent(n, labels=..., generator=...)`: (n, ...) codes of its prior."""
    labels = _labels(plugin, "sample_latent", labels, supplied_by).get("labels")
    with calling(plugin, "sample_latent"):
        codes = model.sample_latent(n, labels=labels, generator=generator)
    return check_codes(plugin, "sample_latent", codes, n)


def call_encode(
    model: torch.nn.Module,
    plugin: ModelPlugin,
    images: torch.Tensor,
    *,
    labels: torch.Tensor | None,
    supplied_by: str = "labelled --data",
) -> torch.Tensor:
    """`model.encode(x)`, with `labels=` for conditional models: one code per image."""
    by_class = _taken_by(model.encode, _labels(plugin, "encode", labels, supplied_by))
    with calling(plugin, "encode"):
        codes = model.encode(images, **by_class)
    return check_codes(plugin, "encode", codes, images.shape[0])


def call_decode(
    model: torch.nn.Module,
    plugin: ModelPlugin,
    codes: torch.Tensor,
    *,
    labels: torch.Tensor | None,
    supplied_by: str = "--label",
) -> torch.Tensor:
    """`model.decode(z)`, with `labels=` for conditional models: images, checked by the caller
    against the shape it expects."""
    by_class = _labels(plugin, "decode", labels, supplied_by)
    with calling(plugin, "decode"):
        return model.decode(codes, **by_class)


def call_reconstruct(
    model: torch.nn.Module,
    plugin: ModelPlugin,
    images: torch.Tensor,
    *,
    labels: torch.Tensor | None,
    supplied_by: str = "labelled --data",
) -> torch.Tensor:
    """`model.reconstruct(x)`, with `labels=` for conditional models: images of x's shape."""
    by_class = _taken_by(model.reconstruct, _labels(plugin, "reconstruct", labels, supplied_by))
    with calling(plugin, "reconstruct"):
        images_back = model.reconstruct(images, **by_class)
    check_images(plugin, images_back, tuple(images.shape), "reconstruct")
    return images_back


def call_evaluation_metrics(
    model: torch.nn.Module,
    plugin: ModelPlugin,
    images: torch.Tensor,
    *,
    labels: torch.Tensor | None,
) -> dict[str, float]:
    """`model.evaluation_metrics(x)`, with `labels=` for conditional models: the model's own
    metrics of a batch of real images, as numbers by name."""
    by_class = _labels(plugin, "evaluation_metrics", labels, "a labelled --data")
    with calling(plugin, "evaluation_metrics"):
        values = model.evaluation_metrics(images, **by_class)
    if not isinstance(values, dict) or not all(isinstance(name, str) for name in values):
        raise PluginError(
            f"{plugin.name}: evaluation_metrics returned {type(values).__name__}, expected a "
            "dict of scalar values by name"
        )
    numbers = {}
    for name, value in values.items():
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = value.item()
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise PluginError(
                f"{plugin.name}: evaluation_metrics gave {name!r} as {type(value).__name__}, "
                "expected a number or a one-element tensor"
            )
        numbers[name] = float(value)
    return numbers


def _labels(
    plugin: ModelPlugin, method: str, labels: torch.Tensor | None, supplied_by: str
) -> dict[str, torch.Tensor]:
    """The labels keyword for `method`: only conditional models get one, and they must."""
    if not plugin.capabilities.conditional:
        return {}
    if labels is None:
        raise GentoolError(
            f"{plugin.name} is conditional: its {method} needs the class of each image; "
            f"give {supplied_by}"
        )
    return {"labels": labels}


def _taken_by(method: Callable[..., object], by_class: dict[str, torch.Tensor]) -> dict:
    """`by_class` if `method` takes labels: a conditional model written for API 1.0 encodes and
    reconstructs without them (1.1 added them), and keeps working."""
    return by_class if not by_class or takes_labels(method) else {}


def takes_labels(method: Callable[..., object]) -> bool:
    """Whether `method` takes a `labels` keyword (as API 1.1 has it, when it cannot be read)."""
    try:
        parameters = inspect.signature(method).parameters.values()
    except (TypeError, ValueError):
        return True
    return any(p.name == "labels" or p.kind is p.VAR_KEYWORD for p in parameters)


def check_images(
    plugin: ModelPlugin, images: object, shape: tuple[int, ...], method: str = "sample"
) -> None:
    """What a plugin's `method` returned is images as the plugin API promises, before anything
    uses them: a float tensor of `shape`."""
    if not isinstance(images, torch.Tensor) or tuple(images.shape) != shape:
        got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise PluginError(f"{plugin.name}: {method} returned {got}, expected a tensor of {shape}")
    if not images.is_floating_point():
        raise PluginError(f"{plugin.name}: {method} returned {images.dtype}, expected floats")


def check_codes(plugin: ModelPlugin, method: str, codes: object, count: int) -> torch.Tensor:
    """Codes as the plugin API allows them: (count, ...) floats, or integer indexes for discrete
    codes (a VQ-VAE's), finite."""
    if not isinstance(codes, torch.Tensor) or codes.ndim < 2 or codes.shape[0] != count:
        got = tuple(codes.shape) if isinstance(codes, torch.Tensor) else type(codes).__name__
        call = f"{method} of {count} images" if method == "encode" else f"{method}({count})"
        raise PluginError(
            f"{plugin.name}: {call} returned {got}, expected one code per image, (N, ...)"
        )
    if codes.dtype == torch.bool or codes.is_complex():
        raise PluginError(
            f"{plugin.name}: {method} returned {codes.dtype} codes; codes are floats, or "
            "integers for discrete codes"
        )
    if codes.is_floating_point() and not bool(torch.isfinite(codes).all()):
        raise PluginError(f"{plugin.name}: {method} returned codes that are not finite")
    return codes
