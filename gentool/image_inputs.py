"""Images handed to a trained model from Python, in whatever form they come, as its input.

Accepted: uint8 pixels (torch tensors (N, C, H, W) or (C, H, W); NumPy arrays (N, H, W, C),
(H, W, C) or (H, W)); float tensors already in the model's value range; PIL images and image
files, fitted to the model's size as training data is; and lists of any of these. Anything else
is a one-line `DataError` that says what was expected.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from gentool.api import DataSpec
from gentool.data import load_image, to_value_range
from gentool.data.decode import fit_to_spec
from gentool.errors import DataError

ImageInput = Any  # a tensor, a NumPy array, a PIL image, a path, or a sequence of them


def model_inputs(
    images: ImageInput, spec: DataSpec, value_range: tuple[float, float]
) -> torch.Tensor:
    """`images` as (N, C, H, W) floats in `value_range`, of `spec`'s shape."""
    if _is_sequence(images):
        return torch.cat([model_inputs(image, spec, value_range) for image in images])
    if isinstance(images, torch.Tensor):
        if images.layout != torch.strided or images.is_meta:
            raise DataError("image tensors must be dense tensors holding their values")
        if images.is_floating_point():
            return _checked_floats(images.detach(), spec, value_range)
    return to_value_range(as_pixels(images, spec), value_range)


def as_pixels(images: ImageInput, spec: DataSpec) -> torch.Tensor:
    """uint8 (N, C, H, W) pixels of `spec`'s shape from a uint8 tensor or array, a PIL image or
    an image file (fitted to the size, as training data is)."""
    if isinstance(images, (str, os.PathLike)):
        return load_image(Path(images), spec)[None]
    if isinstance(images, Image.Image):
        return _pil_pixels(images, spec)
    if isinstance(images, np.ndarray):
        return _checked_pixels(_array_pixels(images), spec)
    if isinstance(images, torch.Tensor):
        if images.dtype != torch.uint8:
            raise DataError(
                f"image tensors must be uint8 pixels or floats in the model's range, not "
                f"{images.dtype}"
            )
        return _checked_pixels(images[None] if images.ndim == 3 else images, spec)
    raise DataError(
        "images must be a uint8 or float torch tensor, a uint8 NumPy array, a PIL image or an "
        f"image file's path, or a list of them; got {type(images).__name__}"
    )


def _is_sequence(images: ImageInput) -> bool:
    return isinstance(images, Sequence) and not isinstance(images, (str, bytes)) and bool(images)


def _pil_pixels(image: Image.Image, spec: DataSpec) -> torch.Tensor:
    if 0 in image.size:
        raise DataError(f"a PIL image of {image.width}×{image.height} pixels holds no picture")
    try:
        return fit_to_spec(image, spec)[None]
    except (ValueError, OSError) as error:  # a closed image, a mode Pillow cannot convert
        raise DataError(f"cannot read the PIL image ({image.mode}): {error}") from None


def _array_pixels(array: np.ndarray) -> torch.Tensor:
    """A NumPy image or batch, (N, H, W, C), (H, W, C) or (H, W), as a (N, C, H, W) tensor."""
    if array.dtype != np.uint8:
        raise DataError(
            f"NumPy images must be uint8 pixels (0-255), not {array.dtype}: convert with "
            "(x * 255).round().astype(np.uint8), or pass a float torch tensor in the model's range"
        )
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4:
        raise DataError(f"a NumPy image is (H, W, C) or a batch (N, H, W, C), not {array.shape}")
    return torch.from_numpy(np.ascontiguousarray(array.transpose(0, 3, 1, 2)))


def _checked_pixels(pixels: torch.Tensor, spec: DataSpec) -> torch.Tensor:
    _check_shape(pixels, spec)
    return pixels


def _checked_floats(
    images: torch.Tensor, spec: DataSpec, value_range: tuple[float, float]
) -> torch.Tensor:
    images = images[None] if images.ndim == 3 else images
    _check_shape(images, spec)
    low, high = value_range
    if images.numel() and not (images.min() >= low - 1e-3 and images.max() <= high + 1e-3):
        raise DataError(
            f"float images are taken to be in the model's value range [{low:g}, {high:g}]; these "
            f"span [{float(images.min()):g}, {float(images.max()):g}]: pass uint8 pixels instead"
        )
    return images.float()


def _check_shape(images: torch.Tensor, spec: DataSpec) -> None:
    expected = (spec.channels, spec.height, spec.width)
    if images.ndim != 4 or tuple(images.shape[1:]) != expected or images.shape[0] == 0:
        shape = ", ".join(map(str, expected))
        raise DataError(f"expected images of shape (N, {shape}), got {tuple(images.shape)}")
