"""Where images come from: folders, .npz arrays and the built-in synthetic sets."""

from __future__ import annotations

import os
import random
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from gentool import synthetic
from gentool.data.cache import cached, content_fingerprint
from gentool.data.dataset import DataWarning, ImageDataset
from gentool.data.decode import (
    DECODE_ERRORS,
    IMAGE_SUFFIXES,
    fit_image,
    open_image,
    stack_images,
)
from gentool.errors import DataError

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
) -> ImageDataset:
    """Load `source` (a folder, an .npz file or "builtin:NAME"), fitted to `image_size`."""
    if limit is not None and limit < 1:
        raise DataError(f"--limit must be at least 1, got {limit}")
    source = source or default_source(needs_labels)
    if source.startswith(BUILTIN_PREFIX):
        dataset = _load_builtin(source, image_size, limit)
    else:
        path = Path(source).expanduser()
        if not path.exists():
            raise DataError(f"data path {source!r} does not exist")
        if path.is_dir():
            dataset = _load_folder(path, source, image_size, limit)
        elif path.suffix.lower() == ".npz":
            dataset = _load_npz(path, source, image_size, limit)
        else:
            raise DataError(
                f"cannot read {source!r}: give a folder of images, an .npz file, "
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
    if name == "faces":
        return synthetic.make_faces(count, size, start=start), None, ()
    if name == "shapes":
        images, labels = synthetic.make_shapes(count, size, start=start)
        return images, labels, synthetic.SHAPE_CLASSES
    choices = ", ".join(BUILTIN_SETS)
    raise DataError(f"unknown built-in data set {name!r}; choose one of {choices}")


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


def _load_folder(
    root: Path, source: str, image_size: int | None, limit: int | None
) -> ImageDataset:
    files = _image_files(root)
    if not files:
        raise DataError(
            f"no images found in {source!r} (looked for {', '.join(sorted(IMAGE_SUFFIXES))})"
        )
    if limit is not None and limit < len(files):
        # A seeded sample rather than the first files, so every class folder is represented.
        files = sorted(random.Random(0).sample(files, limit))
    class_of = _class_names_by_file(root, files)
    fingerprint = content_fingerprint(
        "folder", image_size, ((str(path.relative_to(root)), path.read_bytes()) for path in files)
    )

    def build() -> ImageDataset:
        images, kept = _decode_files(files, image_size, source)
        if class_of is None:
            return ImageDataset(images, None, (), source, fingerprint)
        class_names = tuple(sorted({class_of[path] for path in kept}))
        index = {name: i for i, name in enumerate(class_names)}
        labels = torch.tensor([index[class_of[path]] for path in kept], dtype=torch.int64)
        return ImageDataset(images, labels, class_names, source, fingerprint)

    return cached(fingerprint, source, build)


def _image_files(root: Path) -> list[Path]:
    files = []
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
            if (
                path.suffix.lower() in IMAGE_SUFFIXES
                and not name.startswith(".")
                and path.is_file()
            ):
                files.append(path)
    return files


def _class_names_by_file(root: Path, files: list[Path]) -> dict[Path, str] | None:
    """Each file's class (its immediate sub-folder), or None when the folder is unlabelled."""
    class_of = {path: path.relative_to(root).parts[0] for path in files}
    loose = [path for path in files if len(path.relative_to(root).parts) == 1]
    if not loose:
        return class_of
    if len(loose) < len(files):
        warnings.warn(
            f"{len(loose)} images lie directly in {root} beside class sub-folders; "
            "the data is treated as unlabelled",
            DataWarning,
            stacklevel=3,
        )
    return None


def _decode_files(
    files: list[Path], image_size: int | None, source: str
) -> tuple[torch.Tensor, list[Path]]:
    def decode(path: Path) -> Image.Image | str:
        try:
            with open_image(path) as image:
                return fit_image(image, image_size)
        except DECODE_ERRORS as error:
            return f"{path}: {error or type(error).__name__}"

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
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
            stacklevel=3,
        )
    images = [image for _, image in decoded]
    return stack_images(images, source), [path for path, _ in decoded]


def _load_npz(path: Path, source: str, image_size: int | None, limit: int | None) -> ImageDataset:
    try:
        archive = np.load(path, allow_pickle=False)
        arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError) as error:
        raise DataError(f"cannot read {source!r} as .npz: {error}") from None
    if "images" not in arrays:
        raise DataError(f"{source!r} has no 'images' array (found: {', '.join(arrays) or 'none'})")
    images = _npz_images(arrays["images"], source)
    labels = arrays.get("labels")
    if labels is not None:
        labels = _npz_labels(labels, len(images), source)
    if limit is not None:
        images = images[:limit]
        labels = None if labels is None else labels[:limit]
    fingerprint = content_fingerprint("npz", image_size, [("images", images.tobytes())])

    def build() -> ImageDataset:
        if image_size is not None and images.shape[1:3] != (image_size, image_size):
            tensor = stack_images(
                [fit_image(_pil_image(image), image_size) for image in images], source
            )
        else:
            tensor = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous()
        class_names = _npz_class_names(arrays.get("class_names"), labels, source)
        label_tensor = None if labels is None else torch.from_numpy(labels)
        return ImageDataset(tensor, label_tensor, class_names, source, fingerprint)

    return cached(fingerprint, source, build)


def _npz_images(images: np.ndarray, source: str) -> np.ndarray:
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
    if images.shape[-1] not in (1, 3) or len(images) == 0:
        raise DataError(
            f"'images' in {source!r} has shape {images.shape}; expected N ≥ 1 images with 1 or 3 "
            "channels"
        )
    return images


def _pil_image(array: np.ndarray) -> Image.Image:
    """One (H, W, C) uint8 array as a Pillow image."""
    return Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)


def _npz_labels(labels: np.ndarray, count: int, source: str) -> np.ndarray:
    if labels.shape != (count,) or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(
            f"'labels' in {source!r} must be {count} integers, one per image; "
            f"got {labels.dtype} of shape {labels.shape}"
        )
    if labels.min() < 0:
        raise DataError(f"'labels' in {source!r} must be class indexes ≥ 0, found {labels.min()}")
    return labels.astype(np.int64)


def _npz_class_names(
    names: np.ndarray | None, labels: np.ndarray | None, source: str
) -> tuple[str, ...]:
    if labels is None:
        return ()
    count = int(labels.max()) + 1
    if names is None:
        return tuple(str(index) for index in range(count))
    if names.ndim != 1 or len(names) < count:
        raise DataError(
            f"'class_names' in {source!r} must list at least {count} names, got shape {names.shape}"
        )
    return tuple(str(name) for name in names)


def write_builtin_set(name: str, folder: Path, *, count: int, size: int) -> int:
    """Write a built-in set as PNGs (labelled sets in a sub-folder per class); return the count."""
    if folder.exists() and any(folder.iterdir()):
        raise DataError(f"{folder} is not empty: choose a new or empty folder")
    images, labels, class_names = builtin_arrays(name, count, size)
    digits = len(str(count - 1))
    for index, pixels in enumerate(images):
        subfolder = folder / class_names[labels[index]] if labels is not None else folder
        subfolder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(subfolder / f"{index:0{digits}d}.png")
    return len(images)
