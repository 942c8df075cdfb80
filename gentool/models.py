"""Building a plugin's model, fresh or from a run folder."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from gentool.api import Capabilities, DataSpec, ModelPlugin
from gentool.checkpoint import RunFolder, latest_run
from gentool.errors import (
    CheckpointError,
    ConfigError,
    GentoolError,
    PluginError,
    describe_exception,
)
from gentool.limits import check_allocation, format_bytes
from gentool.record import RunRecord
from gentool.registry import PluginEntry, plugin_origin, plugin_tracebacks

TRAINING_COPIES = 4  # weights, gradients, and Adam's two moments
REQUIRED_METHODS = ("configure_optimizers", "training_step")


def image_size_of(config: Any) -> int | None:
    """The side the model wants its images fitted to: its config's `image_size`, when it has one
    (see `gentool.api.ModelPlugin`); None means the data's own size."""
    return getattr(config, "image_size", None)


def plugin_for_config(plugin: ModelPlugin, config: Any) -> ModelPlugin:
    """`plugin` with the capabilities of `config` (`ModelPlugin.capabilities_for`), checked."""
    with calling(plugin, "capabilities_for"):
        specialised = plugin.for_config(config)
    if not isinstance(specialised.capabilities, Capabilities):
        raise PluginError(
            f"{plugin.name}: capabilities_for returned "
            f"{type(specialised.capabilities).__name__}, not Capabilities"
        )
    return specialised


def build_model(
    plugin: ModelPlugin, config: Any, spec: DataSpec, device: torch.device | str
) -> torch.nn.Module:
    """The plugin's model for data of shape `spec`, on `device`.

    The model is first built on PyTorch's meta device, which allocates nothing, so that a config
    asking for more memory than the machine has is refused before any of it is taken.
    """
    device = torch.device(device)
    _check_size(plugin, config, spec, device)
    with calling(plugin, "build"):
        model = plugin.build(config, spec)
    if not isinstance(model, torch.nn.Module):
        raise PluginError(f"{plugin.name}: build returned {type(model).__name__}, not an nn.Module")
    missing = [name for name in REQUIRED_METHODS if not callable(getattr(model, name, None))]
    if missing:
        raise PluginError(
            f"{plugin.name}: the model build returned has no {' or '.join(missing)}() method"
        )
    return model.to(device)


@contextmanager
def calling(plugin: ModelPlugin, method: str) -> Iterator[None]:
    """Say in one line what went wrong in a plugin's `method`: a ValueError from `build` is the
    plugin API's way to refuse a config that does not fit the data; anything else is the
    plugin's failure, named as such with its distribution (GENTOOL_DEBUG=1 lets it through
    whole)."""
    try:
        yield
    except GentoolError:
        raise
    except ValueError as error:
        if method != "build":
            raise _plugin_failure(plugin, method, error) from None
        if plugin_tracebacks():
            raise
        message = str(error)
        shown = message if message.startswith(plugin.name) else f"{plugin.name}: {message}"
        raise ConfigError(shown) from None
    except KeyboardInterrupt:
        raise
    except BaseException as error:  # SystemExit too: a plugin does not decide gentool's exit
        raise _plugin_failure(plugin, method, error) from None


def _plugin_failure(plugin: ModelPlugin, method: str, error: BaseException) -> BaseException:
    """The error to raise: the plugin's own under GENTOOL_DEBUG=1, else one line."""
    if plugin_tracebacks():
        return error
    return PluginError(
        f"{plugin_origin(plugin)} raised {describe_exception(error)} in {method}; "
        "GENTOOL_DEBUG=1 shows the traceback"
    )


def _check_size(plugin: ModelPlugin, config: Any, spec: DataSpec, device: torch.device) -> None:
    """Refuse a model whose weights, gradients and optimizer state would not fit in memory.

    A plugin that cannot build on the meta device is built for real without this check."""
    what = f"{plugin.name} with this config"
    fix = "choose smaller sizes in its config (see gentool info)"
    try:
        with torch.device("meta"), _ValuesNotDrawn():
            model = plugin.build(config, spec)
        tensors = [*model.parameters(), *model.buffers()]
    except (RuntimeError, TypeError, OverflowError) as error:
        if "overflow" in str(error).lower():  # a size whose byte count int64 cannot hold
            raise ConfigError(f"{what} asks for tensors too large to count: {fix}") from None
        return  # the real build below reports its own failure
    except (Exception, SystemExit):
        return
    weights = sum(tensor.numel() * tensor.element_size() for tensor in tensors)
    # Weights, their gradients and two moments of Adam: four times the weights.
    needed = TRAINING_COPIES * weights
    what = f"{what} ({format_bytes(weights)} of weights)"
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        if needed > free:
            raise ConfigError(
                f"{what} would take {format_bytes(needed)} to train on {device}, which has "
                f"{format_bytes(free)} free: {fix}"
            )
        return
    check_allocation(needed, what, fix, ConfigError)


class _ValuesNotDrawn(TorchFunctionMode):
    """Skip normal_ on meta tensors, which hold no values to draw: PyTorch's meta kernel for it
    imports its Python reference ops first, 1.2 to 1.7 s that every DCGAN start paid for a size
    check."""

    def __torch_function__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: dict | None = None
    ) -> Any:
        kwargs = kwargs or {}
        if func is torch.Tensor.normal_ or func is torch.nn.init.normal_:
            tensor = args[0] if args else kwargs.get("tensor")
            if isinstance(tensor, torch.Tensor) and tensor.is_meta:
                return tensor
        return func(*args, **kwargs)


def load_trained(
    entry: PluginEntry, run_dir: Path | None, device: torch.device, *, averaged: bool = False
) -> tuple[torch.nn.Module, RunRecord, RunFolder]:
    """The model of a run (the newest run of the plugin when `run_dir` is None), in eval mode.

    `averaged`: with the moving average of the weights when the run kept one (`train --ema`).
    """
    assert entry.plugin is not None
    run = RunFolder(run_dir) if run_dir is not None else latest_run(entry.name)
    record = run.read(expected_plugin=entry.name)
    config = run.read_config(entry.plugin, record)
    model = build_model(entry.plugin, config, record.data.spec, device)
    try:
        with calling(entry.plugin, "load_state_dict"):
            _load_weights(run, record, model, averaged=averaged)
    except CheckpointError:
        # A training of the run may have committed a newer checkpoint and removed this one
        # between the two reads: the newer one is the run's, then.
        newer = run.read(expected_plugin=entry.name)
        same_model = (newer.config, newer.data) == (record.config, record.data)
        if newer.checkpoint == record.checkpoint or not same_model:
            raise
        record = newer
        with calling(entry.plugin, "load_state_dict"):
            _load_weights(run, record, model, averaged=averaged)
    return model.eval(), record, run


def _load_weights(
    run: RunFolder, record: RunRecord, model: torch.nn.Module, *, averaged: bool
) -> None:
    run.load_model(record, model)
    average = run.load_ema(record) if averaged else None
    if average is not None:
        run.load_model(record, model, tensors=average)
