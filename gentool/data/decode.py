"""Image files as tensors: one fitted to a model's data shape, or a list of equal-sized ones."""

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


def stack_images(images: list[Image.Image], source: str) -> torch.Tensor:
    sizes = {image.size for image in images}
    if len(sizes) > 1:
        shown = ", ".join(f"{w}×{h}" for w, h in sorted(sizes)[:4])
        raise DataError(
            f"images in {source!r} have different sizes ({shown}) and no size was set to fit "
            "them to: set the model's image_size (gentool fid: --image-size)"
        )
    # Colour wins: one RGB image makes the whole set RGB (grey images are replicated to 3 channels).
    mode = "L" if all(image.mode == "L" for image in images) else "RGB"
    arrays = [np.asarray(image.convert(mode)) for image in images]
    stacked = np.stack(arrays)  # (N, H, W) or (N, H, W, 3)
    if stacked.ndim == 3:
        stacked = stacked[..., None]
    return torch.from_numpy(stacked).permute(0, 3, 1, 2).contiguous()  # (N, C, H, W)
