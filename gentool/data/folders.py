"""Data from a folder of images, searched recursively; immediate sub-folders name the classes.

Every file in it is untrusted: only regular files with an image suffix are read, a file larger
than MAX_IMAGE_FILE_BYTES is skipped before a byte of it is read (a sparse terabyte costs
nothing), and a file that cannot be read or decoded, for whatever reason, is skipped with a
count. Names that are not valid UTF-8 are kept as they are on disk and shown with escapes.

Listing reads no image: the data set's key comes from each file's name, size and times, so a
restart on a cached folder starts without reading its images.
"""

from __future__ import annotations

import os
import random
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from gentool.data.cache import Built, DataKey
from gentool.data.dataset import DataWarning, ImageDataset
from gentool.data.decoding import Tracker, content_digest_of, decode_into
from gentool.data.pixels import PixelWriter, cached
from gentool.errors import DataError
from gentool.image_files import IMAGE_SUFFIXES, ImageFile
from gentool.limits import MAX_FOLDER_DEPTH, MAX_IMAGE_FILE_BYTES, SYSTEM_FOLDERS
from gentool.terminal import counted

_SUFFIXES = tuple(IMAGE_SUFFIXES)


@dataclass(frozen=True)
class Listing:
    """The images a source holds, before any is read: what to decode, each one's path inside
    the source (its parts, which name its class), and the key they give."""

    items: list[ImageFile]
    parts: list[tuple[str, ...]]
    shown: Callable[[int], str]  # image `index` as a message names it
    key: DataKey
    root: str  # the source as a message names it


def load_folder(
    root: Path,
    source: str,
    image_size: int | None,
    limit: int | None,
    *,
    verify: bool = False,
    track: Tracker | None = None,
) -> ImageDataset:
    key = DataKey("folder", image_size)
    files = _image_files(root, source, limit)
    contents = key.add_files([("/".join(found.parts), found.path, found.status) for found in files])
    items = [
        ImageFile(found.path, None, found.status.st_size, found.status.st_mtime_ns, content)
        for found, content in zip(files, contents, strict=True)
    ]
    parts = [found.parts for found in files]
    listing = Listing(items, parts, lambda index: _escaped(files[index].path), key, shown(root))
    return load_listing(listing, source, image_size, verify=verify, track=track)


def load_listing(
    listing: Listing,
    source: str,
    image_size: int | None,
    *,
    verify: bool,
    track: Tracker | None,
) -> ImageDataset:
    """The listed images, from the cache or decoded into it; labelled by their class folders."""
    classes = _classes(listing)

    def build(writer: PixelWriter) -> Built:
        kept, digest = decode_into(
            writer, listing.items, image_size, source, names=listing.shown, track=track
        )
        if classes is None:
            return Built(None, (), digest)
        kept_classes = [classes[index] for index in kept]
        class_names = tuple(sorted(set(kept_classes)))
        index_of = {name: index for index, name in enumerate(class_names)}
        labels = np.array([index_of[name] for name in kept_classes], dtype=np.int64)
        return Built(labels, class_names, digest)

    recheck = (lambda: content_digest_of(listing.items)) if verify else None
    return cached(listing.key, source, build, source_digest=recheck)


def _classes(listing: Listing) -> list[str] | None:
    """Each image's class (its immediate sub-folder), or None when the source is unlabelled."""
    loose = sum(len(parts) == 1 for parts in listing.parts)
    if not loose:
        shown_as = {parts[0]: _escaped(parts[0]) for parts in listing.parts}
        return [shown_as[parts[0]] for parts in listing.parts]
    if loose < len(listing.parts):
        warnings.warn(
            f"{counted(loose, 'image')} {'lies' if loose == 1 else 'lie'} directly in "
            f"{listing.root} beside class sub-folders; "
            "the data is treated as unlabelled",
            DataWarning,
            stacklevel=5,
        )
    return None


def sample(items: list, limit: int | None) -> list:
    """`limit` of `items`, in their order: a seeded sample rather than the first, so that every
    class folder is represented."""
    if limit is None or limit >= len(items):
        return items
    chosen = set(random.Random(0).sample(range(len(items)), limit))
    return [item for index, item in enumerate(items) if index in chosen]


def _image_files(root: Path, source: str, limit: int | None) -> list[_Found]:
    """The regular files with an image suffix under `root`, small enough to read, in order of
    their parts. Plain strings, not Path objects, which would cost more than the listing."""
    files: list[_Found] = []
    too_large, too_deep = [], []
    # Linked folders are followed (data sets are often assembled from links), each real folder
    # once, so a link loop cannot trap the search; and only so deep.
    visited = {os.path.realpath(root)}
    if _is_system(os.path.realpath(root)):
        raise DataError(f"{source!r} is a folder of the system, not data: give a folder of images")
    folders: list[tuple[str, tuple[str, ...]]] = [(str(root), ())]
    while folders:
        folder, parts = folders.pop()
        subfolders = []
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            name = entry.name
            if name.startswith("."):
                continue
            try:
                if entry.is_dir():
                    subfolders.append((entry.path, (*parts, name)))
                elif name.lower().endswith(_SUFFIXES) and entry.is_file():
                    found = _Found((*parts, name), entry.path, entry.stat())
                    (too_large if found.status.st_size > MAX_IMAGE_FILE_BYTES else files).append(
                        found
                    )
            except OSError:
                continue
        # A link to the system's folders (/proc holds one to / itself) leads to no data.
        real = {sub: os.path.realpath(sub[0]) for sub in subfolders}
        unseen = sorted(
            sub for sub in subfolders if real[sub] not in visited and not _is_system(real[sub])
        )
        if unseen and len(parts) >= MAX_FOLDER_DEPTH:
            too_deep.append(unseen[0][0])
            continue
        visited.update(real[sub] for sub in unseen)
        folders.extend(unseen)
    _warn_skipped(too_large, too_deep)
    if not files:
        raise DataError(
            f"no images found in {source!r} (looked for {', '.join(sorted(IMAGE_SUFFIXES))})"
        )
    files.sort(key=lambda found: found.parts)
    return sample(files, limit)


def _is_system(real_path: str) -> bool:
    return (real_path + "/").startswith(SYSTEM_FOLDERS)


class _Found(NamedTuple):
    parts: tuple[str, ...]  # the path below the root
    path: str
    status: os.stat_result


def _warn_skipped(too_large: list[_Found], too_deep: list[str]) -> None:
    if too_deep:
        warnings.warn(
            f"skipped the folders more than {MAX_FOLDER_DEPTH} levels down (first: "
            f"{shown(Path(too_deep[0]))})",
            DataWarning,
            stacklevel=5,
        )
    if too_large:
        warnings.warn(
            f"skipped {counted(len(too_large), 'image file')} larger than "
            f"{MAX_IMAGE_FILE_BYTES // 2**20} MiB (first: {shown(Path(too_large[0].path))})",
            DataWarning,
            stacklevel=5,
        )


def shown(path: Path) -> str:
    """A path for a message, its undecodable bytes as escapes."""
    return _escaped(str(path))


def _escaped(name: str) -> str:
    return os.fsencode(name).decode("utf-8", "backslashreplace")
