"""Decoding image files: any mode Pillow opens becomes 8-bit grey or RGB, fitted to a size."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from gentool.api import DataSpec
from gentool.errors import DataError
from gentool.limits import MAX_IMAGE_SIDE, open_untrusted

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
# What those files may hold, in Pillow's names (its JPEG opener also reads the multi-picture
# JPEGs that cameras write).
IMAGE_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP", "TIFF")
# Larger images are skipped unread: a small file can declare billions of pixels (a decompression
# bomb). 8192×8192 stays below Pillow's own warning threshold, so Pillow never has to step in.
MAX_IMAGE_PIXELS = MAX_IMAGE_SIDE * MAX_IMAGE_SIDE
_GRAYSCALE_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
_WIDE_INTEGER_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N"})  # read as 16-bit
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_TRANSPARENT_GROUND = (255, 255, 255, 255)  # see-through pixels become white


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


class ImageTooLarge(ValueError):
    """An image declares more pixels than MAX_IMAGE_PIXELS."""


@contextlib.contextmanager
def open_image(source: Path | BinaryIO) -> Iterator[Image.Image]:
    """Open an image of one of the formats gentool reads, refusing one too large to decode
    before any pixel is read, upright.

    The formats are named: Pillow would otherwise try every format it knows, EPS among them,
    which it renders by running Ghostscript on the file, a program a data file must not run.
    """
    with contextlib.ExitStack() as files:
        file = files.enter_context(open_untrusted(source)) if isinstance(source, Path) else source
        image = files.enter_context(Image.open(file, formats=IMAGE_FORMATS))
        width, height = image.size
        if width * height > MAX_IMAGE_PIXELS:
            raise ImageTooLarge(
                f"{width}×{height} pixels is more than the limit of {MAX_IMAGE_PIXELS} pixels"
            )
        image.load()
        yield ImageOps.exif_transpose(image)


def to_8_bit(image: Image.Image) -> Image.Image:
    """Bring any mode Pillow opens to "L" (grey) or "RGB", 8 bits per channel.

    Pillow's own conversion clips 16-bit grey to white and drops alpha, revealing whatever colour
    transparent pixels happen to hold; here 16-bit values are scaled to 8 bits, float images are
    read as [0, 1], and transparency is composited over white.
    """
    if image.mode in _WIDE_INTEGER_MODES:
        pixels = np.clip(np.asarray(image, dtype=np.int64), 0, 65535)
        return Image.fromarray(np.round(pixels / 257).astype(np.uint8), mode="L")
    if image.mode == "F":
        pixels = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0)
        return Image.fromarray(np.round(np.clip(pixels, 0, 1) * 255).astype(np.uint8), mode="L")
    grey = image.mode in _GRAYSCALE_MODES
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        ground = Image.new("RGBA", image.size, _TRANSPARENT_GROUND)
        image = Image.alpha_composite(ground, image.convert("RGBA"))
    return image.convert("L" if grey else "RGB")


def fit_image(image: Image.Image, image_size: int | None) -> Image.Image:
    """Bring one image to a common mode and, when a size is given, to size×size."""
    image = to_8_bit(image)
    if image_size is not None and image.size != (image_size, image_size):
        image = ImageOps.fit(image, (image_size, image_size), Image.Resampling.LANCZOS)
    return image


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
