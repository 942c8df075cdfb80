"""Data from an .npz file: `images`, and optionally `labels` and `class_names`.

The file is untrusted. Before any array is read, each member's .npy header is checked: its dtype
(never objects, which would need pickle), its shape (no empty images), and its size against
both what the archive really holds and the memory available. The fingerprint covers everything
that decides the decoded content: the pixels with their shape, the labels and the class names.
"""

from __future__ import annotations

import hashlib
import math
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from gentool.data.cache import Built, DataKey
from gentool.data.dataset import ImageDataset
from gentool.data.pixels import PixelWriter, cached
from gentool.errors import DataError
from gentool.image_files import fit_image
from gentool.limits import MAX_CLASSES, MAX_IMAGE_SIDE, check_allocation, open_untrusted

MEMBERS = ("images", "labels", "class_names")
_WRITE_CHUNK = 1024  # images fitted and written at a time
_HEADER_READERS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}


def load_npz(
    path: Path,
    source: str,
    image_size: int | None,
    limit: int | None,
    *,
    verify: bool = False,
) -> ImageDataset:
    key = DataKey("npz", image_size)
    try:
        key.add_files([("", str(path), path.stat())])
    except OSError as error:
        raise DataError(f"cannot read {source!r}: {error.strerror or error}") from None
    key.add(str(limit))

    def build(writer: PixelWriter) -> Built:
        images, labels, class_names = _read_npz(path, source, limit)
        for start in range(0, len(images), _WRITE_CHUNK):
            chunk = images[start : start + _WRITE_CHUNK]
            if image_size is not None and images.shape[1:3] != (image_size, image_size):
                writer.write(
                    [np.asarray(fit_image(_pil_image(image), image_size)) for image in chunk]
                )
            else:
                writer.write([image[..., 0] if image.shape[-1] == 1 else image for image in chunk])
        return Built(labels, class_names, file_digest(path))

    recheck = (lambda: file_digest(path)) if verify else None
    return cached(key, source, build, source_digest=recheck)


def _read_npz(
    path: Path, source: str, limit: int | None
) -> tuple[np.ndarray, np.ndarray | None, tuple[str, ...]]:
    arrays = read_arrays(path, source, MEMBERS)
    if "images" not in arrays:
        found = ", ".join(sorted(array_names(path, source))) or "none"
        raise DataError(f"{source!r} has no 'images' array (found: {found})")
    images = _images(arrays["images"], source)
    labels = arrays.get("labels")
    if labels is not None:
        labels = _labels(labels, len(images), source)
    if limit is not None:
        images = images[:limit]
        labels = None if labels is None else labels[:limit]
    return images, labels, _class_names(arrays.get("class_names"), labels, source)


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open_untrusted(path) as file:
        while chunk := file.read(2**23):
            digest.update(chunk)
    return digest.hexdigest()


def array_names(path: Path, source: str) -> set[str]:
    """The names of the arrays in an .npz file, read from its directory alone."""
    try:
        with open_untrusted(path) as file, zipfile.ZipFile(file) as archive:
            names = archive.namelist()
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise DataError(f"cannot read {source!r} as .npz: {_first_line(error)}") from None
    return {name.removesuffix(".npy") for name in names if name.endswith(".npy")}


HeaderCheck = Callable[[str, tuple[int, ...], np.dtype], None]


def read_arrays(
    path: Path, source: str, names: tuple[str, ...], check: HeaderCheck | None = None
) -> dict[str, np.ndarray]:
    """The arrays called `names` that the file holds, each checked by its header before it is
    loaded: for pickled objects, a size the archive cannot hold or memory cannot, and by `check`
    (name, shape, dtype), which raises a DataError for what the caller cannot use."""
    try:
        with open_untrusted(path) as file:
            with zipfile.ZipFile(file) as archive:
                members = {info.filename: info for info in archive.infolist()}
                wanted = {name: members.get(f"{name}.npy") for name in names}
                for name, info in wanted.items():
                    if info is not None:
                        _check_header(archive, info, name, source, check)
            file.seek(0)
            with np.load(file, allow_pickle=False) as archive:
                return {name: archive[name] for name, info in wanted.items() if info is not None}
    except DataError:
        raise
    except (
        OSError, ValueError, EOFError, KeyError, RuntimeError, NotImplementedError,
        zipfile.BadZipFile,
    ) as error:  # fmt: skip
        # zipfile's own: a damaged archive, an unknown compression, an encrypted member
        raise DataError(f"cannot read {source!r} as .npz: {_first_line(error)}") from None


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def _check_header(
    archive: zipfile.ZipFile,
    info: zipfile.ZipInfo,
    name: str,
    source: str,
    check: HeaderCheck | None = None,
) -> None:
    with archive.open(info) as member:
        version = np.lib.format.read_magic(member)
        read_header = _HEADER_READERS.get(version)
        if read_header is None:
            raise DataError(f"{name!r} in {source!r} is in .npy format {version}, not 1.0 or 2.0")
        shape, _, dtype = read_header(member)
    if dtype.hasobject:
        raise DataError(
            f"{name!r} in {source!r} holds Python objects, which gentool never unpickles: save "
            "plain arrays (np.savez with numbers and strings)"
        )
    if check is not None:
        check(name, tuple(shape), dtype)
    declared = math.prod(shape) * dtype.itemsize
    if declared > info.file_size:
        raise DataError(
            f"{name!r} in {source!r} declares {declared} bytes but the archive holds "
            f"{info.file_size}: the file is damaged"
        )
    check_allocation(declared, f"{name!r} in {source!r}", "use a smaller file", DataError)


def _images(images: np.ndarray, source: str) -> np.ndarray:
    """(N, H, W, C) uint8 from the layouts an .npz may hold."""
    if images.dtype != np.uint8:
        raise DataError(
            f"'images' in {source!r} has dtype {images.dtype}; gentool reads uint8 pixels (0–255): "
            "convert with (x * 255).round().astype(np.uint8)"
        )
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4:
        raise DataError(f"'images' in {source!r} has shape {images.shape}; expected (N, H, W[, C])")
    if images.shape[-1] not in (1, 3) and images.shape[1] in (1, 3):
        images = images.transpose(0, 2, 3, 1)  # (N, C, H, W) → (N, H, W, C)
    height, width = images.shape[1:3]
    if (
        images.shape[-1] not in (1, 3)
        or len(images) == 0
        or not (1 <= height <= MAX_IMAGE_SIDE and 1 <= width <= MAX_IMAGE_SIDE)
    ):
        raise DataError(
            f"'images' in {source!r} has shape {images.shape}; expected N ≥ 1 images of 1 to "
            f"{MAX_IMAGE_SIDE} pixels a side, with 1 or 3 channels"
        )
    return images


def _pil_image(array: np.ndarray) -> Image.Image:
    """One (H, W, C) uint8 array as a Pillow image."""
    return Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)


def _labels(labels: np.ndarray, count: int, source: str) -> np.ndarray:
    if labels.shape != (count,) or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(
            f"'labels' in {source!r} must be {count} integers, one per image; "
            f"got {labels.dtype} of shape {labels.shape}"
        )
    # Compared in the labels' own dtype: a uint64 above 2⁶³ must not wrap negative first.
    if (labels < 0).any() or (labels >= MAX_CLASSES).any():
        low, high = labels.min(), labels.max()
        raise DataError(
            f"'labels' in {source!r} must be class indexes ≥ 0 and < {MAX_CLASSES}, found "
            f"{low if low < 0 else high}"
        )
    return labels.astype(np.int64)


def _class_names(
    names: np.ndarray | None, labels: np.ndarray | None, source: str
) -> tuple[str, ...]:
    if labels is None:
        return ()
    count = int(labels.max()) + 1
    if names is None:
        return tuple(str(index) for index in range(count))
    if names.ndim != 1 or len(names) < count or names.dtype.kind not in "US":
        raise DataError(
            f"'class_names' in {source!r} must list at least {count} names as strings, got "
            f"{names.dtype} of shape {names.shape}"
        )
    return tuple(
        name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)
        for name in names.tolist()
    )
