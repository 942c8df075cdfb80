"""Generating images from a trained run."""

from __future__ import annotations

from pathlib import Path

import torch

from gentool.data import to_uint8
from gentool.errors import GentoolError, PluginError
from gentool.images import save_grid
from gentool.models import load_trained
from gentool.registry import PluginEntry
from gentool.train import resolve_device


def sample_images(
    entry: PluginEntry,
    *,
    count: int,
    run_dir: Path | None,
    out: Path | None,
    seed: int,
    device: str,
) -> Path:
    """Draw `count` images from a run's model and write them as one grid PNG; return its path."""
    plugin = entry.plugin
    assert plugin is not None
    if not plugin.capabilities.sample:
        raise GentoolError(f"{plugin.name} does not generate new images, so it cannot sample")
    model, record, run = load_trained(entry, run_dir, resolve_device(device))
    generator = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    with torch.no_grad():
        images = model.sample(count, generator=generator)
    spec = record.data["spec"]
    expected = (count, spec["channels"], spec["height"], spec["width"])
    if tuple(images.shape) != expected:
        raise PluginError(
            f"{plugin.name}: sample returned shape {tuple(images.shape)}, expected {expected}"
        )
    path = out or run.samples_dir / f"sample_seed{seed}_n{count}.png"
    return save_grid(to_uint8(images, plugin.value_range), path)
