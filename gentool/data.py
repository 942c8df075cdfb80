"""Training data: image folders, .npz arrays and the built-in synthetic sets, as one uint8 tensor.

Images are decoded once with Pillow, fitted to the model's size (shorter side resized, centre
cropped) and kept as a single (N, C, H, W) uint8 tensor. Decoded folders and arrays are cached on
disk as safetensors, keyed by a hash of the files' contents and the preprocessing, so a second run
decodes nothing. Batches are slices of that tensor, scaled to the model's value range on the device.

Sources:
- a folder of images, searched recursively; when every image lies in an immediate sub-folder, the
  sub-folders name the classes (sorted) and the images are labelled;
- an ``.npz`` file with ``images`` (uint8, (N, H, W), (N, H, W, C) or (N, C, H, W)) and optional
  ``labels`` (N,) and ``class_names``;
- ``builtin:faces`` (cartoon faces) or ``builtin:shapes`` (labelled shapes), generated
  deterministically; used when no source is given.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import warnings
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from gentool import synthetic
from gentool.api import Batch, DataSpec
from gentool.atomic import atomic_write
from gentool.errors import DataError

BUILTIN_PREFIX = "builtin:"
BUILTIN_SETS = ("faces", "shapes")
DEFAULT_BUILTIN_COUNT = 5000
DEFAULT_IMAGE_SIZE = 64  # for built-in sets when the model does not fix a size
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
# Larger images are skipped unread: a small file can declare billions of pixels (a decompression
# bomb). 8192×8192 stays below Pillow's own warning threshold, so Pillow never has to step in.
MAX_IMAGE_PIXELS = 8192 * 8192
_CACHE_FORMAT = 2  # bump when decoding or the cache layout changes
_GRAYSCALE_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
_WIDE_INTEGER_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N"})  # read as 16-bit
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_TRANSPARENT_GROUND = (255, 255, 255, 255)  # see-through pixels become white


class DataWarning(UserWarning):
    """Something in the data was skipped or ignored; the CLI prints it as one line."""


@dataclass
class ImageDataset:
    """Decoded images, ready to batch."""

    images: torch.Tensor  # (N, C, H, W) uint8
    labels: torch.Tensor | None  # (N,) int64, or None when unlabelled
    class_names: tuple[str, ...]
    source: str  # what the user named: a path or "builtin:NAME"
    fingerprint: str  # identifies the content and preprocessing; a resumed run checks it

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def spec(self) -> DataSpec:
        _, channels, height, width = self.images.shape
        return DataSpec(channels, height, width, self.class_names)


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


class BatchLoader:
    """Shuffled batches, reproducible per (seed, epoch) so that a run can resume exactly.

    In a distributed run (`world_size` processes) every process draws the same permutation of
    the epoch and takes its own contiguous block of each global batch of `batch_size` images:
    the processes see disjoint images, and together exactly the batch a single process would,
    whatever their number.
    """

    def __init__(
        self,
        dataset: ImageDataset,
        batch_size: int,
        *,
        device: torch.device,
        value_range: tuple[float, float],
        seed: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if batch_size < 1:
            raise DataError(f"--batch-size must be at least 1, got {batch_size}")
        if len(dataset) < batch_size:
            raise DataError(
                f"the data has {len(dataset)} images, fewer than one batch of {batch_size}: "
                "lower --batch-size or add images"
            )
        self.dataset = dataset
        self.batch_size = batch_size
        self.device = device
        self.value_range = value_range
        self.seed = seed
        self.shard = batch_size // world_size  # images per process; the trainer checks it divides
        self.rank = rank

    @property
    def steps_per_epoch(self) -> int:
        # Incomplete batches are dropped: batch statistics and GAN losses assume full batches.
        return len(self.dataset) // self.batch_size

    def epoch(self, epoch: int, *, start_step: int = 0) -> Iterator[Batch]:
        """The batches of `epoch`, skipping the first `start_step` (when resuming mid-epoch)."""
        generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        order = torch.randperm(len(self.dataset), generator=generator)
        for step in range(start_step, self.steps_per_epoch):
            start = step * self.batch_size + self.rank * self.shard
            indexes = order[start : start + self.shard]
            images = self.dataset.images[indexes].to(self.device, non_blocking=True)
            labels = self.dataset.labels
            yield Batch(
                images=to_value_range(images, self.value_range),
                labels=None if labels is None else labels[indexes].to(self.device),
            )


def to_value_range(images: torch.Tensor, value_range: tuple[float, float]) -> torch.Tensor:
    """uint8 pixels → float32 in [low, high]."""
    low, high = value_range
    return images.to(torch.float32) * ((high - low) / 255.0) + low


def to_uint8(images: torch.Tensor, value_range: tuple[float, float]) -> torch.Tensor:
    """Float images in [low, high] → uint8 pixels (values outside the range are clipped)."""
    low, high = value_range
    scaled = (images.detach().to(torch.float32) - low) * (255.0 / (high - low))
    return scaled.round().clamp(0, 255).to(torch.uint8)


def load_image(path: Path, spec: DataSpec) -> torch.Tensor:
    """One image file fitted to a model's data shape, as (C, H, W) uint8."""
    try:
        with open_image(path) as image:
            image = to_8_bit(image).convert("L" if spec.channels == 1 else "RGB")
            if image.size != (spec.width, spec.height):
                image = ImageOps.fit(image, (spec.width, spec.height), Image.Resampling.LANCZOS)
            pixels = np.array(image)
    except FileNotFoundError:
        raise DataError(f"image {path} does not exist") from None
    except DECODE_ERRORS as error:
        raise DataError(f"cannot read image {path}: {error}") from None
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    return torch.from_numpy(pixels).permute(2, 0, 1).contiguous()


class ImageTooLarge(ValueError):
    """An image declares more pixels than MAX_IMAGE_PIXELS."""


# What Pillow raises on files it cannot decode: what its documentation names for Image.open, the
# SyntaxError of a broken PNG, and our own ImageTooLarge (a ValueError); tests/test_fuzz.py feeds
# mutated files of every common format to the loader to hold that list to account.
DECODE_ERRORS = (OSError, SyntaxError, ValueError, TypeError, Image.DecompressionBombError)


@contextlib.contextmanager
def open_image(path: Path) -> Iterator[Image.Image]:
    """Open an image, refusing one too large to decode before any pixel is read, upright."""
    with Image.open(path) as image:
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


def make_builtin_arrays(
    name: str, count: int, size: int
) -> tuple[np.ndarray, np.ndarray | None, tuple[str, ...]]:
    """A built-in set as (images (N, H, W, 3) uint8, labels or None, class names)."""
    if name == "faces":
        return synthetic.make_faces(count, size), None, ()
    if name == "shapes":
        images, labels = synthetic.make_shapes(count, size)
        return images, labels, synthetic.SHAPE_CLASSES
    choices = ", ".join(BUILTIN_SETS)
    raise DataError(f"unknown built-in data set {name!r}; choose one of {choices}")


def _load_builtin(source: str, image_size: int | None, limit: int | None) -> ImageDataset:
    name = source.removeprefix(BUILTIN_PREFIX)
    count = limit or DEFAULT_BUILTIN_COUNT
    size = image_size or DEFAULT_IMAGE_SIZE
    images, labels, class_names = make_builtin_arrays(name, count, size)
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
    fingerprint = _fingerprint(
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

    return _cached(fingerprint, source, build)


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
                return _fit(image, image_size)
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
    return _stack(images, source), [path for path, _ in decoded]


def _fit(image: Image.Image, image_size: int | None) -> Image.Image:
    """Bring one image to a common mode and, when a size is given, to size×size."""
    image = to_8_bit(image)
    if image_size is not None and image.size != (image_size, image_size):
        image = ImageOps.fit(image, (image_size, image_size), Image.Resampling.LANCZOS)
    return image


def _stack(images: list[Image.Image], source: str) -> torch.Tensor:
    sizes = {image.size for image in images}
    if len(sizes) > 1:
        shown = ", ".join(f"{w}×{h}" for w, h in sorted(sizes)[:4])
        raise DataError(
            f"images in {source!r} have different sizes ({shown}) and the model does not fix one: "
            "set the model's image_size"
        )
    # Colour wins: one RGB image makes the whole set RGB (grey images are replicated to 3 channels).
    mode = "L" if all(image.mode == "L" for image in images) else "RGB"
    arrays = [np.asarray(image.convert(mode)) for image in images]
    stacked = np.stack(arrays)  # (N, H, W) or (N, H, W, 3)
    if stacked.ndim == 3:
        stacked = stacked[..., None]
    return torch.from_numpy(stacked).permute(0, 3, 1, 2).contiguous()  # (N, C, H, W)


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
    fingerprint = _fingerprint("npz", image_size, [("images", images.tobytes())])

    def build() -> ImageDataset:
        if image_size is not None and images.shape[1:3] != (image_size, image_size):
            tensor = _stack([_fit(_pil_image(image), image_size) for image in images], source)
        else:
            tensor = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous()
        class_names = _npz_class_names(arrays.get("class_names"), labels, source)
        label_tensor = None if labels is None else torch.from_numpy(labels)
        return ImageDataset(tensor, label_tensor, class_names, source, fingerprint)

    return _cached(fingerprint, source, build)


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


def _fingerprint(kind: str, image_size: int | None, parts: Iterable[tuple[str, bytes]]) -> str:
    digest = hashlib.sha256(f"{kind}:{_CACHE_FORMAT}:{image_size}".encode())
    for name, content in parts:
        digest.update(name.encode())
        digest.update(len(content).to_bytes(8, "little"))
        digest.update(content)
    return f"{kind}:{digest.hexdigest()[:32]}"


def cache_dir() -> Path:
    """Where decoded datasets are cached: $GENTOOL_CACHE, else ~/.cache/gentool."""
    base = os.environ.get("GENTOOL_CACHE") or Path.home() / ".cache" / "gentool"
    return Path(base) / "data"


def _cached(fingerprint: str, source: str, build: Callable[[], ImageDataset]) -> ImageDataset:
    """The dataset from the on-disk cache, or built and then cached.

    What building warned about (files skipped, say) is kept with the entry and said again on every
    load: a cached data set still has the holes its files had.
    """
    path = cache_dir() / (fingerprint.replace(":", "-") + ".safetensors")
    if path.exists():
        try:
            with safe_open(str(path), "pt") as handle:
                metadata = handle.metadata() or {}
                tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
            class_names = tuple(json.loads(metadata.get("class_names", "[]")))
            notes = [str(note) for note in json.loads(metadata.get("warnings", "[]"))]
            dataset = ImageDataset(
                tensors["images"], tensors.get("labels"), class_names, source, fingerprint
            )
        except (OSError, SafetensorError, KeyError, ValueError):
            pass  # a damaged cache entry is rebuilt from the source below
        else:
            for note in notes:
                warnings.warn(note, DataWarning, stacklevel=3)
            return dataset
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DataWarning)
        dataset = build()
    notes = []
    for warning in caught:
        if issubclass(warning.category, DataWarning):
            notes.append(str(warning.message))
            warnings.warn(str(warning.message), DataWarning, stacklevel=3)
        else:
            warnings.warn_explicit(
                warning.message, warning.category, warning.filename, warning.lineno
            )
    tensors = {"images": dataset.images}
    if dataset.labels is not None:
        tensors["labels"] = dataset.labels
    metadata = {"class_names": json.dumps(dataset.class_names), "warnings": json.dumps(notes)}
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as temporary:
        save_file(tensors, temporary, metadata=metadata)
    return dataset


def write_builtin_set(name: str, folder: Path, *, count: int, size: int) -> int:
    """Write a built-in set as PNGs (labelled sets in a sub-folder per class); return the count."""
    if folder.exists() and any(folder.iterdir()):
        raise DataError(f"{folder} is not empty: choose a new or empty folder")
    images, labels, class_names = make_builtin_arrays(name, count, size)
    digits = len(str(count - 1))
    for index, pixels in enumerate(images):
        subfolder = folder / class_names[labels[index]] if labels is not None else folder
        subfolder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(subfolder / f"{index:0{digits}d}.png")
    return len(images)
