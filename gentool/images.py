"""Image grids written as PNG files."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from gentool.atomic import atomic_write


def image_grid(images: torch.Tensor, *, columns: int | None = None, padding: int = 2) -> np.ndarray:
    """Tile (N, C, H, W) uint8 images into one (rows·H, columns·W, C) array on a white ground."""
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(
            f"expected (N, 1|3, H, W) uint8 images, got {images.dtype} {tuple(images.shape)}"
        )
    count, channels, height, width = images.shape
    columns = columns or max(1, math.ceil(math.sqrt(count)))
    rows = max(1, math.ceil(count / columns))
    grid = np.full(
        (rows * (height + padding) + padding, columns * (width + padding) + padding, channels),
        255,
        dtype=np.uint8,
    )
    pixels = images.permute(0, 2, 3, 1).cpu().numpy()  # (N, H, W, C)
    for index in range(count):
        row, column = divmod(index, columns)
        top = padding + row * (height + padding)
        left = padding + column * (width + padding)
        grid[top : top + height, left : left + width] = pixels[index]
    return grid


def save_png(pixels: np.ndarray, path: str | Path) -> Path:
    """Write an (H, W, C) uint8 array as a PNG, atomically."""
    path = Path(path)
    image = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)
    with atomic_write(path, make_parents=True) as temporary:
        image.save(temporary, format="PNG")
    return path


def save_grid(images: torch.Tensor, path: str | Path, *, columns: int | None = None) -> Path:
    """Write (N, C, H, W) uint8 images as one grid PNG."""
    return save_png(image_grid(images, columns=columns), path)
