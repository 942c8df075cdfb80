"""Train the builtin feature network and write gentool/assets/features_builtin.safetensors.

    python scripts/train_features.py            # about 3 minutes on a 2-core CPU

What it learns, and why (docs/evaluation.md has the longer story): FID and its kin need features
that (1) separate realistic images of the built-in kind from broken ones and (2) keep the
variation among realistic ones, so that a generator drawing one face many times is caught. The
network therefore trains on two tasks at once:

- a 12-way classifier: a built-in face, one of the six built-in shapes, or garbage made from
  them: blurred, noisy, patch-shuffled, pure noise, or smooth colour blobs;
- a regressor of the input's 4×4 colour thumbnail, which keeps layout and colour in the features.

The training images come from the built-in generators with seed 1 (evaluation uses seed 0), at
32×32 and at 64×64 shrunk by the network's own preprocessing. Everything is seeded and runs on
one thread, so the script writes the same weights on the same torch build.
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
from gentool.features import (
    BUILTIN_CLASSES,
    BUILTIN_FEATURES,
    BUILTIN_IMAGE_SIZE,
    BUILTIN_PREPROCESSING,
    BUILTIN_THUMBNAIL,
    BUILTIN_VERSION,
    BUILTIN_WEIGHTS,
    BuiltinFeatureNet,
    builtin_pixels,
)

DATA_SEED = 1
HELD_OUT_SEED = 2
GARBAGE = BUILTIN_CLASSES.index("blurred")  # classes from here on are corruptions
THUMBNAIL_WEIGHT = 10.0  # the thumbnail MSE is ~0.01 at the end; this keeps both tasks in play


def clean_images(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Faces and shapes, half of each, at 32×32 and at 64×64 shrunk: (images in [0, 1], labels)."""
    parts, labels = [], []
    for size, share in ((BUILTIN_IMAGE_SIZE, 0.75), (2 * BUILTIN_IMAGE_SIZE, 0.25)):
        n = int(count * share) // 2
        faces = synthetic.make_faces(n, size, seed=seed)
        shapes, shape_labels = synthetic.make_shapes(n, size, seed=seed)
        for pixels in (faces, shapes):
            parts.append(builtin_pixels(torch.from_numpy(pixels).permute(0, 3, 1, 2)))
        labels += [torch.zeros(n, dtype=torch.int64), torch.from_numpy(shape_labels) + 1]
    return torch.cat(parts), torch.cat(labels)


def corrupt(images: torch.Tensor, kind: int, generator: torch.Generator) -> torch.Tensor:
    """Garbage of class `kind` (an index into BUILTIN_CLASSES) made from `images`."""
    count, _, size, _ = images.shape

    def uniform(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=generator)

    name = BUILTIN_CLASSES[kind]
    if name == "blurred":
        low = int(torch.randint(3, 9, (1,), generator=generator))
        small = F.interpolate(images, size=(low, low), mode="area")
        return F.interpolate(small, size=(size, size), mode="bilinear", align_corners=False)
    if name == "noisy":
        sigma = 0.1 + 0.3 * uniform(count, 1, 1, 1)
        return (images + sigma * torch.randn(images.shape, generator=generator)).clamp(0, 1)
    if name == "shuffled":
        patch = size // 4
        tiles = images.unfold(2, patch, patch).unfold(3, patch, patch)  # (B, 3, 4, 4, p, p)
        tiles = tiles.reshape(count, 3, 16, patch, patch)
        order = torch.stack([torch.randperm(16, generator=generator) for _ in range(count)])
        tiles = tiles[torch.arange(count)[:, None], :, order].permute(0, 2, 1, 3, 4)
        tiles = tiles.reshape(count, 3, 4, 4, patch, patch).permute(0, 1, 2, 4, 3, 5)
        return tiles.reshape(count, 3, size, size)
    if name == "noise":
        return uniform(count, 3, size, size)
    if name == "blobs":
        low = int(torch.randint(2, 9, (1,), generator=generator))
        return F.interpolate(uniform(count, 3, low, low), size=(size, size), mode="bilinear")
    raise ValueError(f"{name} is not a corruption")


def training_batch(
    images: torch.Tensor, labels: torch.Tensor, batch: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Half clean images, half garbage spread over the five kinds."""
    indexes = torch.randint(0, len(images), (batch,), generator=generator)
    pixels, targets = images[indexes].clone(), labels[indexes].clone()
    kinds = torch.randint(0, 2 * (len(BUILTIN_CLASSES) - GARBAGE), (batch,), generator=generator)
    for kind in range(GARBAGE, len(BUILTIN_CLASSES)):
        chosen = kinds == kind - GARBAGE
        if chosen.any():
            pixels[chosen] = corrupt(pixels[chosen], kind, generator)
            targets[chosen] = kind
    return pixels, targets


def losses(
    network: BuiltinFeatureNet, pixels: torch.Tensor, targets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    logits, thumbnail = network(pixels)
    expected = F.adaptive_avg_pool2d(pixels, BUILTIN_THUMBNAIL).flatten(1)  # (B, 48)
    classification = F.cross_entropy(logits, targets)
    regression = F.mse_loss(thumbnail, expected)
    accuracy = (logits.argmax(dim=1) == targets).float().mean()
    return classification, regression, accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=12000, help="clean training images")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--out", type=Path, default=BUILTIN_WEIGHTS)
    args = parser.parse_args()

    torch.set_num_threads(1)
    torch.manual_seed(0)
    started = time.perf_counter()
    images, labels = clean_images(args.images, DATA_SEED)
    held_out = training_batch(
        *clean_images(2000, HELD_OUT_SEED), 2000, torch.Generator().manual_seed(1)
    )
    network = BuiltinFeatureNet()
    optimizer = torch.optim.Adam(network.parameters(), lr=2e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, args.steps)
    generator = torch.Generator().manual_seed(0)
    for step in range(1, args.steps + 1):
        pixels, targets = training_batch(images, labels, args.batch_size, generator)
        classification, regression, accuracy = losses(network, pixels, targets)
        optimizer.zero_grad(set_to_none=True)
        (classification + THUMBNAIL_WEIGHT * regression).backward()
        optimizer.step()
        schedule.step()
        if step % 250 == 0 or step == args.steps:
            print(
                f"step {step}: cross-entropy {classification:.4f} thumbnail MSE {regression:.5f} "
                f"accuracy {accuracy:.3f}",
                flush=True,
            )
    network.eval()
    with torch.no_grad():
        classification, regression, accuracy = losses(network, *held_out)
    seconds = time.perf_counter() - started
    metadata = {
        "version": str(BUILTIN_VERSION),
        "preprocessing": BUILTIN_PREPROCESSING,
        "feature_dim": str(BUILTIN_FEATURES),
        "classes": json.dumps(BUILTIN_CLASSES),
        "trained_on": f"{args.images} built-in faces and shapes (seed {DATA_SEED}) and garbage "
        f"made from them; {args.steps} steps of {args.batch_size}",
        "held_out": json.dumps(
            {"accuracy": round(float(accuracy), 4), "thumbnail_mse": round(float(regression), 5)}
        ),
        "training_seconds": f"{seconds:.0f}",
    }
    state = {key: value.contiguous() for key, value in network.state_dict().items()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, args.out, metadata=metadata)
    size_kb = args.out.stat().st_size / 1024
    print(
        f"held out: accuracy {accuracy:.3f}, thumbnail MSE {regression:.5f}; "
        f"wrote {args.out} ({size_kb:.0f} KiB) in {seconds:.0f} s"
    )


if __name__ == "__main__":
    main()
