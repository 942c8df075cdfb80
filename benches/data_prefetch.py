"""On a GPU: do training steps wait for data?

    python benches/data_prefetch.py OUT.json [--steps 40]

DCGAN at 64×64 and its default batch takes steps two ways: fed by gentool's BatchLoader (each
batch gathered into pinned memory and copied on a side stream while the step before it runs),
and on one batch already on the device. Each way's time per step is the median of three runs of
`--steps` steps, synchronised only at their ends, as training runs. The loader's batches are first
checked against the same batches gathered without the GPU, flips included.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from gentool.data import BatchLoader, load_dataset
from gentool.models import build_model
from gentool.registry import resolve
from gentool.training.step import StepContext, optimizers_of, train_step

WARMUP_STEPS = 5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--steps", type=int, default=40)
    arguments = parser.parse_args()
    device = torch.device("cuda")
    plugin = resolve("dcgan").plugin
    config = plugin.parse_config({"image_size": 64})
    batch_size = plugin.default_batch_size
    count = batch_size * (arguments.steps + WARMUP_STEPS + 1)
    dataset = load_dataset("builtin:faces", image_size=64, limit=count)
    settings = {"value_range": plugin.value_range, "seed": 0, "augment": ("flip",)}
    on_gpu = BatchLoader(dataset, batch_size, device=device, **settings)
    on_cpu = BatchLoader(dataset, batch_size, device=torch.device("cpu"), **settings)
    equal = all(
        torch.equal(gpu.images.cpu(), cpu.images)
        for gpu, cpu in zip(on_gpu.epoch(0), on_cpu.epoch(0), strict=True)
    )
    torch.manual_seed(0)
    model = build_model(plugin, config, dataset.spec, device)
    context = StepContext(optimizers_of(model, plugin), device)
    resident = next(iter(on_gpu.epoch(1)))

    def run(batches) -> float:
        torch.cuda.synchronize(device)
        started = time.perf_counter()
        for batch in batches:
            train_step(model, batch, context, plugin)
        torch.cuda.synchronize(device)
        return (time.perf_counter() - started) / arguments.steps

    for _ in range(WARMUP_STEPS):
        train_step(model, resident, context, plugin)
    with_data, on_device = [], []
    for epoch in range(3):
        batches = on_gpu.epoch(epoch)
        with_data.append(run(next(batches) for _ in range(arguments.steps)))
        on_device.append(run(resident for _ in range(arguments.steps)))
    result = {
        "batch_size": batch_size,
        "steps": arguments.steps,
        "batches_equal": equal,
        "with_data_ms": statistics.median(with_data) * 1e3,
        "on_device_ms": statistics.median(on_device) * 1e3,
    }
    result["ratio"] = result["with_data_ms"] / result["on_device_ms"]
    arguments.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
