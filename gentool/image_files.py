"""Image files without torch: opening one safely, bringing it to 8-bit grey or RGB at a size,
and decoding a list of them, which the data layer's worker processes run.

Nothing here imports torch, so a worker process starts in a fraction of a second.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import signal
import warnings
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, NamedTuple

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

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
SNIFF_ABOVE_BYTES = 2**20  # a larger file must show an image's header before it is read whole


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


class ImageFile(NamedTuple):  # a tuple: a data set lists millions, and workers receive them
    """One image to decode as it was when listed: a file, or a member of a zip archive."""

    path: str  # the file, or the archive that holds it
    member: str | None  # its name in the archive
    size: int
    modified_ns: int  # a file's modification time, checked again as it is read
    sha256: bytes | None = None  # for a file changed just before it was listed: its content


class FileChanged(Exception):
    """A file is not what it was when listed: it changed while the data was read."""


@dataclass(frozen=True)
class Decoded:
    """One file's outcome: its pixels, (H, W) grey or (H, W, 3), or why it was skipped; and the
    SHA-256 of its bytes (None when they could not be read)."""

    pixels: np.ndarray | None
    failure: str | None
    sha256: bytes | None


def decode_files(items: list[ImageFile], image_size: int | None) -> list[Decoded]:
    """Decode each of `items`, fitted to `image_size`. One that cannot be read or decoded, for
    whatever reason, is a failure, except one that changed since it was listed (FileChanged)."""
    with warnings.catch_warnings():
        # Pillow's own remarks on damaged files (truncated tags, odd metadata) would be one
        # line per file; a file that fails is counted by the caller instead.
        warnings.filterwarnings("ignore", module="PIL")
        return [_decode(item, image_size) for item in items]


def start_worker() -> None:
    """A worker process leaves Ctrl-C to its parent, which stops the pool."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _decode(item: ImageFile, image_size: int | None) -> Decoded:
    if item.size > SNIFF_ABOVE_BYTES and not _is_image(item):
        return Decoded(None, "not an image in a format gentool reads", None)
    try:
        content = read_content(item)
    except FileChanged:
        raise
    except OSError as error:
        return Decoded(None, f"could not be read: {error.strerror or error}", None)
    except Exception as error:  # a damaged archive member: zipfile's own errors
        return Decoded(None, f"could not be read: {error or type(error).__name__}", None)
    digest = hashlib.sha256(content).digest()
    try:
        with open_image(io.BytesIO(content)) as image:
            pixels = np.asarray(fit_image(image, image_size))
    except UnidentifiedImageError:  # Pillow's message names an in-memory copy, not the file
        return Decoded(None, "not an image in a format gentool reads", digest)
    except Exception as error:  # whatever one file does, it is that file that is skipped
        return Decoded(None, str(error) or type(error).__name__, digest)
    return Decoded(pixels, None, digest)


def _is_image(item: ImageFile) -> bool:
    """Whether Pillow knows the file's format, from its header alone: a large file is read whole
    only once it shows it is an image. Any doubt is left to the decoding."""
    try:
        with contextlib.ExitStack() as files:
            if item.member is None:
                file = files.enter_context(open_untrusted(item.path))
            else:
                file = files.enter_context(_archive(item.path).open(item.member))
            files.enter_context(Image.open(file, formats=IMAGE_FORMATS))
    except UnidentifiedImageError:
        return False
    except Exception:  # unreadable or damaged: the decoding says which, with a count
        return True
    return True


def read_content(item: ImageFile) -> bytes:
    """The bytes of `item`; a file that is not as it was listed (its size or modification time)
    is FileChanged. An archive member is checked by zipfile, against its CRC-32."""
    if item.member is not None:
        with _archive(item.path).open(item.member) as member:
            return member.read()  # no further than the size the listing checked
    with open_untrusted(item.path) as file:
        before = os.fstat(file.fileno()).st_mtime_ns
        content = file.read(item.size + 1)
        after = os.fstat(file.fileno()).st_mtime_ns
    if len(content) != item.size or before != item.modified_ns or after != item.modified_ns:
        raise FileChanged(item.path)
    if item.sha256 is not None and hashlib.sha256(content).digest() != item.sha256:
        raise FileChanged(item.path)
    return content


_archives: dict[str, tuple[zipfile.ZipFile, BinaryIO]] = {}


def _archive(path: str) -> zipfile.ZipFile:
    """The archive at `path`, opened once per process until `close_archives`."""
    if path not in _archives:
        file = open_untrusted(path)
        try:
            _archives[path] = (zipfile.ZipFile(file), file)
        except BaseException:
            file.close()
            raise
    return _archives[path][0]


def close_archives() -> None:
    """Close the archives this process opened (a ZipFile leaves a file it was given open): the
    next decoding may find them replaced."""
    while _archives:
        archive, file = _archives.popitem()[1]
        archive.close()
        file.close()
