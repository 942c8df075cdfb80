"""Building a plugin's model, fresh or from a run folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from gentool.api import DataSpec, ModelPlugin
from gentool.checkpoint import RunFolder, latest_run
from gentool.errors import ConfigError, PluginError
from gentool.record import RunRecord
from gentool.registry import PluginEntry


def image_size_of(config: Any) -> int | None:
    """The side the model wants its images fitted to: its config's `image_size`, when it has one
    (see `gentool.api.ModelPlugin`); None means the data's own size."""
    return getattr(config, "image_size", None)


def build_model(
    plugin: ModelPlugin, config: Any, spec: DataSpec, device: torch.device
) -> torch.nn.Module:
    """The plugin's model for data of shape `spec`, on `device`."""
    try:
        model = plugin.build(config, spec)
    except ValueError as error:  # the API's way to say that config and data do not fit together
        raise ConfigError(f"{plugin.name}: {error}") from None
    if not isinstance(model, torch.nn.Module):
        raise PluginError(f"{plugin.name}: build returned {type(model).__name__}, not an nn.Module")
    return model.to(device)


def load_trained(
    entry: PluginEntry, run_dir: Path | None, device: torch.device, *, averaged: bool = False
) -> tuple[torch.nn.Module, RunRecord, RunFolder]:
    """The model of a run (the newest run of the plugin when `run_dir` is None), in eval mode.

    `averaged`: with the moving average of the weights when the run kept one (`train --ema`).
    """
    assert entry.plugin is not None
    run = RunFolder(run_dir) if run_dir is not None else latest_run(entry.name)
    record = run.read(expected_plugin=entry.name)
    config = entry.plugin.parse_config(record.config)
    model = build_model(entry.plugin, config, record.data.spec, device)
    run.load_model(record, model)
    average = run.load_ema(record) if averaged else None
    if average is not None:
        run.load_model(record, model, tensors=average)
    return model.eval(), record, run
