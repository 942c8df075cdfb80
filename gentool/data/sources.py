"""Where images come from: a folder (`folders`), a zip archive (`zips`), an .npz file
(`arrays`), or a built-in set, and the one place that tells which a source is."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from gentool import synthetic
from gentool.data.arrays import load_npz
from gentool.data.dataset import ImageDataset
from gentool.data.decoding import Tracker
from gentool.data.folders import load_folder
from gentool.data.zips import load_zip
from gentool.errors import DataError
from gentool.limits import MAX_IMAGE_SIDE, check_allocation

BUILTIN_PREFIX = "builtin:"
BUILTIN_SETS = ("faces", "shapes")
DEFAULT_BUILTIN_COUNT = 5000
DEFAULT_IMAGE_SIZE = 64  # for built-in sets when the model does not fix a size


def default_source(needs_labels: bool) -> str:
    """The built-in set a model trains on when the user names no data."""
    return BUILTIN_PREFIX + ("shapes" if needs_labels else "faces")


def load_dataset(
    source: str | None,
    *,
    image_size: int | None,
    needs_labels: bool = False,
    limit: int | None = None,
    verify: bool = False,
    track: Tracker | None = None,
) -> ImageDataset:
    """Load `source` (a folder, a zip archive, an .npz file or "builtin:NAME"), fitted to
    `image_size`. `verify` reads every file again and checks it against the cache (--verify-data);
    `track` shows the decoding's progress."""
    if limit is not None and limit < 1:
        raise DataError(f"--limit must be at least 1, got {limit}")
    if image_size is not None and not 1 <= image_size <= MAX_IMAGE_SIDE:
        raise DataError(
            f"image_size {image_size} is out of reach: images are fitted to 1 to "
            f"{MAX_IMAGE_SIDE} pixels a side"
        )
    if source == "":
        raise DataError(
            "--data is empty (an unset shell variable?): give a folder of images, a .zip or .npz "
            "file or a built-in set, or leave --data out for the built-in one"
        )
    source = source or default_source(needs_labels)
    if source.startswith(BUILTIN_PREFIX):
        dataset = _load_builtin(source, image_size, limit)
    else:
        path = Path(source).expanduser()
        if not path.exists():
            raise DataError(f"data path {source!r} does not exist")
        suffix = path.suffix.lower()
        if path.is_dir():
            dataset = load_folder(path, source, image_size, limit, verify=verify, track=track)
        elif suffix == ".npz" and path.is_file():
            dataset = load_npz(path, source, image_size, limit, verify=verify)
        elif suffix == ".zip" and path.is_file():
            dataset = load_zip(path, source, image_size, limit, verify=verify, track=track)
        else:
            raise DataError(
                f"cannot read {source!r}: give a folder of images, a .zip or .npz file, "
                f"or one of {', '.join(BUILTIN_PREFIX + name for name in BUILTIN_SETS)}"
            )
    if needs_labels and dataset.labels is None:
        raise DataError(
            f"this model needs class labels, and {source!r} has none: "
            "put the images in one sub-folder per class"
        )
    return dataset


def builtin_arrays(
    name: str, count: int, size: int, *, start: int = 0
) -> tuple[np.ndarray, np.ndarray | None, tuple[str, ...]]:
    """A built-in set as (images (N, H, W, 3) uint8, labels or None, class names): images
    `start` to `start + count` of the set's endless sequence."""
    if name not in BUILTIN_SETS:
        choices = ", ".join(BUILTIN_SETS)
        raise DataError(f"unknown built-in data set {name!r}; choose one of {choices}")
    if not synthetic.MIN_SIZE <= size <= synthetic.MAX_SIZE:
        raise DataError(
            f"the built-in sets are drawn at {synthetic.MIN_SIZE} to {synthetic.MAX_SIZE} pixels "
            f"a side, not {size}"
        )
    check_allocation(
        count * size * size * 3,
        f"{count} built-in images of {size}×{size}",
        "lower --limit (or --n)",
        DataError,
    )
    if name == "faces":
        return synthetic.make_faces(count, size, start=start), None, ()
    images, labels = synthetic.make_shapes(count, size, start=start)
    return images, labels, synthetic.SHAPE_CLASSES


def _load_builtin(source: str, image_size: int | None, limit: int | None) -> ImageDataset:
    name = source.removeprefix(BUILTIN_PREFIX)
    count = limit or DEFAULT_BUILTIN_COUNT
    size = image_size or DEFAULT_IMAGE_SIZE
    images, labels, class_names = builtin_arrays(name, count, size)
    version = synthetic.FACES_VERSION if name == "faces" else synthetic.SHAPES_VERSION
    return ImageDataset(
        images=torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
        labels=None if labels is None else torch.from_numpy(labels).to(torch.int64),
        class_names=class_names,
        source=source,
        fingerprint=f"{source}:v{version}:n{count}:s{size}",
    )


def write_builtin_set(name: str, folder: Path, *, count: int, size: int) -> int:
    """Write a built-in set as PNGs (labelled sets in a sub-folder per class); return the count."""
    if folder.exists() and not folder.is_dir():
        raise DataError(f"{folder} is a file: choose a new or empty folder")
    if folder.exists() and any(folder.iterdir()):
        raise DataError(f"{folder} is not empty: choose a new or empty folder")
    images, labels, class_names = builtin_arrays(name, count, size)
    digits = len(str(count - 1))
    for index, pixels in enumerate(images):
        subfolder = folder / class_names[labels[index]] if labels is not None else folder
        subfolder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(subfolder / f"{index:0{digits}d}.png")
    return len(images)
