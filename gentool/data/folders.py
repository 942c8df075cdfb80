"""Data from a folder of images, searched recursively; immediate sub-folders name the classes.

Every file in it is untrusted: only regular files with an image suffix are read, a file larger
than MAX_IMAGE_FILE_BYTES is skipped before a byte of it is read (a sparse terabyte costs
nothing), and a file that cannot be read or decoded, for whatever reason, is skipped with a
count. Names that are not valid UTF-8 are kept as they are on disk and shown with escapes.
"""

from __future__ import annotations

import os
import random
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from PIL import Image

from gentool.data.cache import Fingerprint, cached
from gentool.data.dataset import DataWarning, ImageDataset
from gentool.data.decode import IMAGE_SUFFIXES, fit_image, open_image, stack_images
from gentool.errors import DataError
from gentool.limits import MAX_IMAGE_FILE_BYTES, check_allocation


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
    class_of = _class_names_by_file(root, files)

    def build() -> ImageDataset:
        images, kept = _decode_files(files, image_size, source)
        if class_of is None:
            return ImageDataset(images, None, (), source, fingerprint)
        class_names = tuple(sorted({class_of[path] for path in kept}))
        index = {name: i for i, name in enumerate(class_names)}
        labels = torch.tensor([index[class_of[path]] for path in kept], dtype=torch.int64)
        return ImageDataset(images, labels, class_names, source, fingerprint)

    return cached(fingerprint, source, build)


def _image_paths(root: Path, source: str) -> list[Path]:
    """The regular files with an image suffix under `root`, small enough to read."""
    paths, too_large = [], []
    # Linked folders are followed (data sets are often assembled from links), each real folder
    # once, so a link loop cannot trap the search.
    visited = {os.path.realpath(root)}
    for folder, subfolders, names in os.walk(root, followlinks=True):
        unseen = []
        for name in sorted(subfolders):
            real = os.path.realpath(Path(folder, name))  # never raises on a loop, unlike resolve
            if not name.startswith(".") and real not in visited:
                visited.add(real)
                unseen.append(name)
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


def _read_files(root: Path, paths: list[Path], source: str, digest: Fingerprint) -> list[Path]:
    """The files whose content went into `digest`; one that cannot be read is skipped with a
    count (and so is left out of the data as well as of the fingerprint)."""
    files, unreadable = [], []
    for path in paths:
        try:
            digest.add_file(os.fsencode(path.relative_to(root)), path, path.stat().st_size)
            files.append(path)
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


def _decode_files(
    files: list[Path], image_size: int | None, source: str
) -> tuple[torch.Tensor, list[Path]]:
    def decode(path: Path) -> Image.Image | str:
        try:
            with open_image(path) as image:
                return fit_image(image, image_size)
        except Exception as error:  # whatever one file does, it is that file that is skipped
            return f"{shown(path)}: {error or type(error).__name__}"

    with warnings.catch_warnings(), ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        # Pillow's own remarks on damaged files (truncated tags, odd metadata) would be one
        # line per file; a file that fails is counted below instead.
        warnings.filterwarnings("ignore", module="PIL")
        results = list(pool.map(decode, files))
    decoded = [
        (path, image)
        for path, image in zip(files, results, strict=True)
        if isinstance(image, Image.Image)
    ]
    failures = [result for result in results if isinstance(result, str)]
    if not decoded:
        raise DataError(f"none of the {len(files)} image files in {source!r} could be decoded")
    if failures:
        warnings.warn(
            f"skipped {len(failures)} of {len(files)} files that could not be decoded "
            f"(first: {failures[0]})",
            DataWarning,
            stacklevel=4,
        )
    images = [image for _, image in decoded]
    return stack_images(images, source), [path for path, _ in decoded]
