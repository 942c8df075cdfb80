"""Data from a folder of images, searched recursively; immediate sub-folders name the classes.

Every file in it is untrusted: only regular files with an image suffix are read, a file larger
than MAX_IMAGE_FILE_BYTES is skipped before a byte of it is read (a sparse terabyte costs
nothing), and a file that cannot be read or decoded, for whatever reason, is skipped with a
count. Names that are not valid UTF-8 are kept as they are on disk and shown with escapes.
"""

from __future__ import annotations

import hashlib
import io
import os
import random
import warnings
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from gentool.data.cache import Fingerprint, cached
from gentool.data.dataset import DataWarning, ImageDataset
from gentool.data.decode import IMAGE_SUFFIXES, fit_image, open_image, stack_images
from gentool.errors import DataError
from gentool.limits import (
    MAX_FOLDER_DEPTH,
    MAX_IMAGE_FILE_BYTES,
    check_allocation,
    open_untrusted,
)

Decoded = TypeVar("Decoded")


def load_folder(root: Path, source: str, image_size: int | None, limit: int | None) -> ImageDataset:
    paths = _image_paths(root, source)
    if limit is not None and limit < len(paths):
        # A seeded sample rather than the first files, so every class folder is represented.
        paths = sorted(random.Random(0).sample(paths, limit))
    digest = Fingerprint("folder", image_size)
    files = _read_files(root, paths, source, digest)
    fingerprint = str(digest)
    if image_size is not None:
        check_allocation(
            len(files) * 3 * image_size**2,
            f"{len(files)} images of {image_size}×{image_size}",
            "lower --limit or the model's image_size",
            DataError,
        )
    class_of = _class_names_by_file(root, list(files))

    def build() -> ImageDataset:
        images, kept = decode_files(files, image_size, source)
        if class_of is None:
            return ImageDataset(images, None, (), source, fingerprint)
        class_names = tuple(sorted({class_of[path] for path in kept}))
        index = {name: i for i, name in enumerate(class_names)}
        labels = torch.tensor([index[class_of[path]] for path in kept], dtype=torch.int64)
        return ImageDataset(images, labels, class_names, source, fingerprint)

    return cached(fingerprint, source, build)


def _image_paths(root: Path, source: str) -> list[Path]:
    """The regular files with an image suffix under `root`, small enough to read."""
    paths, too_large, too_deep = [], [], []
    # Linked folders are followed (data sets are often assembled from links), each real folder
    # once, so a link loop cannot trap the search; and only so deep, as os.walk recurses.
    visited = {os.path.realpath(root)}
    for folder, subfolders, names in os.walk(root, followlinks=True):
        unseen = []
        for name in sorted(subfolders):
            real = os.path.realpath(Path(folder, name))  # never raises on a loop, unlike resolve
            if not name.startswith(".") and real not in visited:
                visited.add(real)
                unseen.append(name)
        if unseen and len(Path(folder).relative_to(root).parts) >= MAX_FOLDER_DEPTH:
            too_deep.append(Path(folder, unseen[0]))
            unseen = []
        subfolders[:] = unseen
        for name in sorted(names):
            path = Path(folder, name)
            if path.suffix.lower() not in IMAGE_SUFFIXES or name.startswith("."):
                continue
            try:
                regular, size = path.is_file(), path.stat().st_size
            except OSError:
                continue
            if regular:
                (too_large if size > MAX_IMAGE_FILE_BYTES else paths).append(path)
    if too_deep:
        warnings.warn(
            f"skipped the folders more than {MAX_FOLDER_DEPTH} levels down (first: "
            f"{shown(too_deep[0])})",
            DataWarning,
            stacklevel=4,
        )
    if too_large:
        warnings.warn(
            f"skipped {len(too_large)} image files larger than {MAX_IMAGE_FILE_BYTES // 2**20} "
            f"MiB (first: {shown(too_large[0])})",
            DataWarning,
            stacklevel=4,
        )
    if not paths:
        raise DataError(
            f"no images found in {source!r} (looked for {', '.join(sorted(IMAGE_SUFFIXES))})"
        )
    return paths


def _read_files(
    root: Path, paths: list[Path], source: str, digest: Fingerprint
) -> dict[Path, bytes]:
    """The files whose content went into `digest`, each with its own SHA-256; one that cannot
    be read is skipped with a count (and so is left out of the data and of the fingerprint)."""
    files, unreadable = {}, []
    for path in paths:
        try:
            name = os.fsencode(path.relative_to(root))
            files[path] = digest.add_file(name, path, path.stat().st_size)
        except OSError as error:
            unreadable.append(f"{shown(path)}: {error.strerror or error}")
    if unreadable:
        warnings.warn(
            f"skipped {len(unreadable)} image files that could not be read (first: "
            f"{unreadable[0]})",
            DataWarning,
            stacklevel=4,
        )
    if not files:
        raise DataError(f"none of the {len(paths)} image files in {source!r} could be read")
    return files


def shown(path: Path) -> str:
    """A path for a message, its undecodable bytes as escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _class_names_by_file(root: Path, files: list[Path]) -> dict[Path, str] | None:
    """Each file's class (its immediate sub-folder), or None when the folder is unlabelled."""
    class_of = {path: shown(Path(path.relative_to(root).parts[0])) for path in files}
    loose = [path for path in files if len(path.relative_to(root).parts) == 1]
    if not loose:
        return class_of
    if len(loose) < len(files):
        warnings.warn(
            f"{len(loose)} images lie directly in {shown(root)} beside class sub-folders; "
            "the data is treated as unlabelled",
            DataWarning,
            stacklevel=4,
        )
    return None


class DataChanged(DataError):
    """A file's content changed between its fingerprint and its decoding."""


def decode_files(
    files: Mapping[Path, bytes], image_size: int | None, source: str
) -> tuple[torch.Tensor, list[Path]]:
    """The files decoded into one (N, C, H, W) uint8 tensor, and the files it holds.

    Each file is read once, checked against the digest its fingerprint was made of (a file
    rewritten meanwhile must not be cached under the old content's key) and decoded from those
    very bytes. At a fixed size, each image is written straight into a tensor made for them all,
    so that decoding takes little more memory than the data set itself.
    """
    paths = list(files)
    if image_size is None:
        images = _decode_each(paths, lambda i: _read_image(paths[i], files[paths[i]], None), source)
        kept = [index for index, image in enumerate(images) if image is not None]
        return stack_images([images[i] for i in kept], source), [paths[i] for i in kept]
    pixels = np.empty((len(paths), 3, image_size, image_size), dtype=np.uint8)
    grey = np.zeros(len(paths), dtype=bool)

    def decode_into(index: int) -> bool:
        array = np.asarray(_read_image(paths[index], files[paths[index]], image_size))
        grey[index] = array.ndim == 2  # (H, W) grey, replicated below, or (H, W, 3)
        pixels[index] = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
        return True

    kept = [index for index, done in enumerate(_decode_each(paths, decode_into, source)) if done]
    for position, index in enumerate(kept):  # close the gaps of skipped files, in place
        if position != index:
            pixels[position] = pixels[index]
    pixels = pixels[: len(kept)]
    if grey[kept].all():  # colour wins: one colour image keeps the whole set in colour
        pixels = np.ascontiguousarray(pixels[:, :1])
    return torch.from_numpy(pixels), [paths[index] for index in kept]


def _read_image(path: Path, digest: bytes, image_size: int | None) -> Image.Image:
    """One file's image from the bytes that match its fingerprint's digest, fitted."""
    with open_untrusted(path) as file:
        content = file.read()
    if hashlib.sha256(content).digest() != digest:
        raise DataChanged(
            f"{shown(path)} changed while the data was read: run again once it is settled"
        )
    with open_image(io.BytesIO(content)) as image:
        return fit_image(image, image_size)


def _decode_each(
    paths: list[Path], decode: Callable[[int], Decoded], source: str
) -> list[Decoded | None]:
    """`decode(index)` for each file in parallel threads; None where it failed. A failure skips
    that file with a count, whatever it raised, except a file that changed meanwhile."""

    def attempt(index: int) -> tuple[Decoded | None, str | None]:
        try:
            return decode(index), None
        except DataChanged:
            raise
        except UnidentifiedImageError:  # Pillow's message names an in-memory copy, not the file
            return None, f"{shown(paths[index])}: not an image in a format gentool reads"
        except Exception as error:  # whatever one file does, it is that file that is skipped
            return None, f"{shown(paths[index])}: {error or type(error).__name__}"

    with warnings.catch_warnings(), ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        # Pillow's own remarks on damaged files (truncated tags, odd metadata) would be one
        # line per file; a file that fails is counted below instead.
        warnings.filterwarnings("ignore", module="PIL")
        outcomes = list(pool.map(attempt, range(len(paths))))
    failures = [failure for _, failure in outcomes if failure is not None]
    if len(failures) == len(paths):
        raise DataError(f"none of the {len(paths)} image files in {source!r} could be decoded")
    if failures:
        warnings.warn(
            f"skipped {len(failures)} of {len(paths)} files that could not be decoded "
            f"(first: {failures[0]})",
            DataWarning,
            stacklevel=5,
        )
    return [result for result, _ in outcomes]
