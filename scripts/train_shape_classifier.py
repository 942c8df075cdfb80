"""Train label accuracy's shape classifier: gentool/assets/shape_classifier.safetensors.

    python scripts/train_shape_classifier.py        # a few minutes on a 2-core CPU

It learns to name the shape in a built-in shapes image: 16×16, 32×32 and 64×64 images (seed 1;
evaluation draws from seed 0) brought to 32×32 by the network's own preprocessing. Half of each
batch gets Gaussian pixel noise, so that the grain of a young generator's images does not decide
the class. Everything is seeded and runs on one thread, so the script writes the same weights on
the same torch build. The accuracy it prints is on fresh shapes (seed 2) of each size.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from gentool import synthetic
from gentool.features import builtin_pixels
from gentool.label_accuracy import (
    CLASSIFIER_PREPROCESSING,
    CLASSIFIER_VERSION,
    CLASSIFIER_WEIGHTS,
    ShapeClassifier,
    classify,
)

DATA_SEED = 1
HELD_OUT_SEED = 2
SIZES = (16, 32, 64)
MAX_NOISE = 0.15  # pixel noise σ, in [0, 1] units, of the noisy half of a batch


def shapes(count: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` built-in shapes of `size`: (uint8 (N, 3, H, W), (N,) class indexes)."""
    pixels, labels = synthetic.make_shapes(count, size, seed=seed)
    return torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(labels)


def training_set(count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` images spread over the sizes, as the network's (N, 3, 32, 32) input."""
    parts, labels = [], []
    for size in SIZES:
        images, classes = shapes(count // len(SIZES), size, DATA_SEED)
        parts.append(builtin_pixels(images))
        labels.append(classes.long())
    return torch.cat(parts), torch.cat(labels)


def training_batch(
    pixels: torch.Tensor, labels: torch.Tensor, batch: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    indexes = torch.randint(0, len(pixels), (batch,), generator=generator)
    chosen = pixels[indexes]
    sigma = MAX_NOISE * torch.rand(batch, 1, 1, 1, generator=generator)
    sigma[: batch // 2] = 0  # half the batch clean
    noise = torch.randn(chosen.shape, generator=generator) * sigma
    return (chosen + noise).clamp(0, 1), labels[indexes]


def held_out_accuracy(network: ShapeClassifier, count: int) -> dict[str, float]:
    """Accuracy on `count` fresh shapes of each size."""
    accuracy = {}
    for size in SIZES:
        images, classes = shapes(count, size, HELD_OUT_SEED)
        accuracy[str(size)] = (classify(network, images) == classes).float().mean().item()
    return accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=24000, help="training images")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--out", type=Path, default=CLASSIFIER_WEIGHTS)
    args = parser.parse_args()

    torch.set_num_threads(1)
    torch.manual_seed(0)
    started = time.perf_counter()
    pixels, labels = training_set(args.images)
    network = ShapeClassifier()
    optimizer = torch.optim.Adam(network.parameters(), lr=2e-3)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, 4e-3, total_steps=args.steps)
    generator = torch.Generator().manual_seed(0)
    for step in range(1, args.steps + 1):
        batch, targets = training_batch(pixels, labels, args.batch_size, generator)
        logits = network(batch)
        loss = F.cross_entropy(logits, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % 250 == 0 or step == args.steps:
            accuracy = (logits.argmax(dim=1) == targets).float().mean()
            print(f"step {step}: cross-entropy {loss:.4f} accuracy {accuracy:.3f}", flush=True)
    network.eval()
    accuracy = held_out_accuracy(network, 3000)
    seconds = time.perf_counter() - started
    metadata = {
        "version": str(CLASSIFIER_VERSION),
        "preprocessing": CLASSIFIER_PREPROCESSING,
        "classes": json.dumps(synthetic.SHAPE_CLASSES),
        "trained_on": f"{args.images} built-in shapes (seed {DATA_SEED}) at sizes {SIZES}; "
        f"{args.steps} steps of {args.batch_size}",
        "held_out_accuracy": json.dumps(
            {size: round(share, 4) for size, share in accuracy.items()}
        ),
        "training_seconds": f"{seconds:.0f}",
    }
    state = {key: value.contiguous() for key, value in network.state_dict().items()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, args.out, metadata=metadata)
    size_kb = args.out.stat().st_size / 1024
    print(f"held out (seed {HELD_OUT_SEED}): accuracy by size {accuracy}")
    print(f"wrote {args.out} ({size_kb:.0f} KiB) in {seconds:.0f} s")


if __name__ == "__main__":
    main()
