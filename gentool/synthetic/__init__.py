"""Built-in image data sets drawn procedurally, so demos and tests need no download.

Every image is drawn from its own random stream keyed by (seed, index): any slice of a set can be
regenerated on its own and comes out byte-identical from run to run. `faces` and `shapes` draw
the pictures, on the supersampled canvas of `canvas`.
"""

from __future__ import annotations

import random

import numpy as np

from gentool.synthetic.faces import draw_face
from gentool.synthetic.shapes import SHAPE_CLASSES, draw_shape

# Bump when the pictures change, so caches keyed on these versions are rebuilt.
FACES_VERSION = 1
SHAPES_VERSION = 1

MIN_SIZE = 8
MAX_SIZE = 1024

__all__ = ["FACES_VERSION", "SHAPES_VERSION", "SHAPE_CLASSES", "make_faces", "make_shapes"]


def make_faces(n: int, size: int, *, seed: int = 0, start: int = 0) -> np.ndarray:
    """(n, size, size, 3) uint8 RGB cartoon faces; image i depends only on (seed, start + i)."""
    _check_arguments(n, size, start)
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    for offset in range(n):
        images[offset] = draw_face(_image_rng("faces", seed, start + offset), size)
    return images


def make_shapes(
    n: int, size: int, *, seed: int = 0, start: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(images (n, size, size, 3) uint8, labels (n,) int64 indexing SHAPE_CLASSES).

    Labels cycle through the classes by index, so every class is equally common.
    """
    _check_arguments(n, size, start)
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    labels = np.arange(start, start + n, dtype=np.int64) % len(SHAPE_CLASSES)
    for offset, label in enumerate(labels):
        rng = _image_rng("shapes", seed, start + offset)
        images[offset] = draw_shape(rng, size, SHAPE_CLASSES[label])
    return images, labels


def _check_arguments(n: int, size: int, start: int) -> None:
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise ValueError(f"size must be between {MIN_SIZE} and {MAX_SIZE}, got {size}")
    if start < 0:
        raise ValueError(f"start must be >= 0, got {start}")


def _image_rng(dataset: str, seed: int, index: int) -> random.Random:
    # random.seed hashes str seeds with SHA-512, unlike hash(), which is salted per process.
    return random.Random(f"gentool.synthetic:{dataset}:{seed}:{index}")
