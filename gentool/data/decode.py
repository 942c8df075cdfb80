"""One image file as a tensor fitted to a model's data shape."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from gentool.api import DataSpec
from gentool.errors import DataError
from gentool.image_files import IMAGE_FORMATS, open_image, to_8_bit


def load_image(path: Path, spec: DataSpec) -> torch.Tensor:
    """One image file fitted to a model's data shape, as (C, H, W) uint8."""
    if path.exists() and not path.is_file():
        raise DataError(f"image {path} is not a regular file")
    try:
        with open_image(path) as image:
            return fit_to_spec(image, spec)
    except FileNotFoundError:
        raise DataError(f"image {path} does not exist") from None
    except UnidentifiedImageError:  # Pillow's message names the file by its descriptor
        formats = ", ".join(IMAGE_FORMATS)
        raise DataError(f"{path} is not an image in a format gentool reads ({formats})") from None
    except Exception as error:  # a file that decodes wrongly fails in any way Pillow has
        raise DataError(f"cannot read image {path}: {error or type(error).__name__}") from None


def fit_to_spec(image: Image.Image, spec: DataSpec) -> torch.Tensor:
    """A Pillow image in the model's mode and size (shorter side resized, centre cropped), as
    (C, H, W) uint8."""
    image = to_8_bit(image).convert("L" if spec.channels == 1 else "RGB")
    if image.size != (spec.width, spec.height):
        image = ImageOps.fit(image, (spec.width, spec.height), Image.Resampling.LANCZOS)
    pixels = np.array(image)
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    return torch.from_numpy(pixels).permute(2, 0, 1).contiguous()
