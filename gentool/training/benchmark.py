"""`gentool bench train`: images per second of full training steps, per way of running them.

Each variant builds the model afresh and steps it exactly as training does (`train_step`, with
the speed options of `gentool.training.speed`), on a batch of random images, so the figures are
those of `gentool train` without its data loading: eager, torch.compile, the fused Triton
kernels, channels-last, compile with channels-last, and --amp's mixed precision with and
without channels-last (bfloat16 on the CPU, where CPUs with native bfloat16 gain the most).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any

import torch

from gentool.api import Batch, DataSpec, ModelPlugin
from gentool.kernels.dispatch import use_backend
from gentool.limits import check_allocation
from gentool.models import build_model, image_size_of
from gentool.training.distributed import Ranks, shard_size
from gentool.training.speed import (
    Acceleration,
    compile_networks,
    mixed_precision,
    prepare_model,
)
from gentool.training.step import StepContext, optimizers_of, train_step

TRAIN_VARIANTS = (
    "eager", "compile", "fused", "channels-last", "compile+channels-last", "amp",
    "amp+channels-last",
)  # fmt: skip
BENCH_IMAGE_SIZE = 32  # for models whose config fixes no image size
BENCH_CLASSES = 10  # labels of the random batch, for conditional models
WARMUP_STEPS = 2  # compilation, the allocator, autotuning


@dataclass
class TrainResult:
    variant: str
    status: str  # "ok" or "skipped"
    reason: str = ""
    step_ms: float | None = None
    images_per_second: float | None = None
    speedup: float | None = None
    peak_mb: float | None = None


def bench_training(
    plugin: ModelPlugin,
    config: Any,
    *,
    batch_size: int,
    device: torch.device,
    variants: list[str],
    steps: int,
    ranks: Ranks | None = None,
) -> list[TrainResult]:
    """Images per second of full training steps (forward, backward, optimizer) per variant.

    Under torchrun (`ranks`) each process steps on its share of `batch_size` and the gradients
    are averaged, as in training; images per second count the whole batch.
    """
    ranks = ranks or Ranks()
    batch = _random_batch(plugin, config, shard_size(batch_size, ranks), device)
    results = []
    for variant in variants:
        if variant == "fused" and device.type != "cuda":
            results.append(TrainResult(variant, "skipped", "Triton kernels need a CUDA device"))
            continue
        try:
            seconds = _median_step_seconds(plugin, config, batch, variant, device, ranks, steps)
        except Exception as error:  # torch.compile can fail on some platforms
            reason = f"{type(error).__name__}: {error}"[:200]
            results.append(TrainResult(variant, "skipped", reason))
            continue
        result = TrainResult(
            variant, "ok", step_ms=seconds * 1e3, images_per_second=batch_size / seconds
        )
        if device.type == "cuda":
            result.peak_mb = torch.cuda.max_memory_allocated(device) / 2**20
        results.append(result)
    eager = next((r for r in results if r.variant == "eager" and r.step_ms), None)
    for result in results:
        if eager and result.step_ms:
            result.speedup = eager.step_ms / result.step_ms
    return results


def _random_batch(plugin: ModelPlugin, config: Any, shard: int, device: torch.device) -> Batch:
    size = image_size_of(config) or BENCH_IMAGE_SIZE
    check_allocation(
        shard * 3 * size * size * 4, f"a batch of {shard} images of {size}×{size}", "lower -b"
    )
    low, high = plugin.value_range
    images = low + (high - low) * torch.rand(shard, 3, size, size, device=device)
    labels = None
    if plugin.capabilities.conditional:
        labels = torch.arange(shard, device=device) % BENCH_CLASSES
    return Batch(images=images, labels=labels)


def _median_step_seconds(
    plugin: ModelPlugin,
    config: Any,
    batch: Batch,
    variant: str,
    device: torch.device,
    ranks: Ranks,
    steps: int,
) -> float:
    """The median time of `steps` training steps of a fresh model run as `variant`."""
    parts = variant.split("+")
    acceleration = Acceleration(
        amp="amp" in parts, compile="compile" in parts, channels_last="channels-last" in parts
    )
    autocast, scaler = mixed_precision(device, acceleration.amp)
    _, channels, height, width = batch.images.shape
    classes = tuple(f"class {index}" for index in range(BENCH_CLASSES))
    spec = DataSpec(channels, height, width, classes if plugin.capabilities.conditional else ())
    layout = torch.channels_last if acceleration.channels_last else torch.contiguous_format
    batch = Batch(batch.images.contiguous(memory_format=layout), batch.labels)
    with use_backend("triton" if variant == "fused" else "torch"):
        torch.manual_seed(0)
        model = prepare_model(build_model(plugin, config, spec, device), acceleration)
        context = StepContext(optimizers_of(model, plugin), device, ranks=ranks, scaler=scaler)
        if acceleration.compile:
            compile_networks(model)  # as `gentool train --compile` does
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        times = []
        for _ in range(WARMUP_STEPS + steps):
            _synchronize(device)
            started = time.perf_counter()
            with autocast:
                train_step(model, batch, context, plugin)
            if scaler is not None:
                scaler.update()
            _synchronize(device)
            times.append(time.perf_counter() - started)
        times = times[WARMUP_STEPS:]
    return statistics.median(times)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
