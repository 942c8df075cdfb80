"""The on-disk cache of decoded data sets, keyed by a fingerprint of their content."""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from gentool.atomic import atomic_write
from gentool.data.dataset import DataWarning, ImageDataset
from gentool.limits import available_memory, open_untrusted

DECODING_VERSION = 2  # bump when decoding changes what the same files decode to
_CACHE_LAYOUT = 4  # in an entry's name: bump when what an entry holds changes
MAX_NOTE_CHARS = 2000  # a class name or a note about skipped files; longer is damage
_SAFETENSORS_DTYPES = {torch.uint8: "U8", torch.int64: "I64"}
_HASH_CHUNK = 2**20


class Fingerprint:
    """Identifies decoded data: everything that decides it (content, names, preprocessing),
    hashed. A resumed run checks it, and the cache is keyed by it."""

    def __init__(self, kind: str, image_size: int | None) -> None:
        self.kind = kind
        self._digest = hashlib.sha256(f"{kind}:{DECODING_VERSION}:{image_size}".encode())

    def add(self, name: bytes, content: bytes) -> None:
        self._digest.update(name)
        self._digest.update(len(content).to_bytes(8, "little"))
        self._digest.update(content)

    def add_file(self, name: bytes, path: Path, size: int) -> bytes:
        """Add a file of `size` bytes, read in chunks; the SHA-256 of its content alone. On an
        OSError nothing of it is added."""
        digest, own = self._digest.copy(), hashlib.sha256()
        digest.update(name)
        digest.update(size.to_bytes(8, "little"))
        read = 0
        with open_untrusted(path) as file:
            while chunk := file.read(_HASH_CHUNK):
                digest.update(chunk)
                own.update(chunk)
                read += len(chunk)
        if read != size:
            raise OSError(f"it changed while it was read ({size} bytes, then {read})")
        self._digest = digest
        return own.digest()

    def __str__(self) -> str:
        return f"{self.kind}:{self._digest.hexdigest()[:32]}"


def cache_dir() -> Path:
    """Where decoded datasets are cached: $GENTOOL_CACHE, else ~/.cache/gentool."""
    base = os.environ.get("GENTOOL_CACHE") or Path.home() / ".cache" / "gentool"
    return Path(base) / "data"


def cached(fingerprint: str, source: str, build: Callable[[], ImageDataset]) -> ImageDataset:
    """The dataset from the on-disk cache, or built and then cached.

    An entry is verified before use (its layout, and a SHA-256 of its content); a damaged one is
    decoded again. A cache that cannot be written (a read-only or full disk, $GENTOOL_CACHE
    naming a file) costs a warning, never the run. What building warned about (files skipped,
    say) is kept with the entry and said again on every load: a cached data set still has the
    holes its files had.
    """
    path = cache_dir() / f"{fingerprint.replace(':', '-')}.v{_CACHE_LAYOUT}.safetensors"
    entry = _read_entry(path, fingerprint, source)
    if entry is not None:
        dataset, notes = entry
    else:
        dataset, notes = _build_noting(build)
        _write_entry(path, dataset, notes, source)
    for note in notes:
        warnings.warn(note, DataWarning, stacklevel=3)
    return dataset


def _build_noting(build: Callable[[], ImageDataset]) -> tuple[ImageDataset, list[str]]:
    """Build, keeping what it warned about the data to say again on every load."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DataWarning)
        dataset = build()
    notes = []
    for warning in caught:
        if issubclass(warning.category, DataWarning):
            notes.append(str(warning.message))
        else:
            warnings.warn_explicit(
                warning.message, warning.category, warning.filename, warning.lineno
            )
    return dataset, notes


def _content_digest(dataset: ImageDataset, notes: list[str]) -> str:
    """SHA-256 of everything an entry holds, its key (the fingerprint) included, so that an
    entry copied under another key is refused. Hashed in place: no copy of the pixels."""
    digest = hashlib.sha256(dataset.fingerprint.encode())
    digest.update(memoryview(dataset.images.numpy()).cast("B"))
    if dataset.labels is not None:
        digest.update(memoryview(dataset.labels.numpy()).cast("B"))
    digest.update(json.dumps([dataset.class_names, notes]).encode())
    return digest.hexdigest()


def _read_entry(path: Path, fingerprint: str, source: str) -> tuple[ImageDataset, list[str]] | None:
    """A verified cache entry, or None for a missing or damaged one."""
    try:
        if not path.is_file():
            return None
        size = path.stat().st_size
        available = available_memory()
        if available is not None and size > available:
            raise ValueError(f"{size} bytes is more than the memory available")
        with safe_open(str(path), "pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
        if metadata.get("fingerprint") != fingerprint:
            raise ValueError("it is another data set's entry")
        class_names, notes = json.loads(metadata["class_names"]), json.loads(metadata["warnings"])
        if not all(
            isinstance(item, str) and len(item) <= MAX_NOTE_CHARS for item in [*class_names, *notes]
        ):
            raise ValueError("its class names or notes are not short strings")
        dataset = ImageDataset(
            tensors["images"], tensors.get("labels"), tuple(class_names), source, fingerprint
        )
        _check_layout(dataset)
        if _content_digest(dataset, notes) != metadata["sha256"]:
            raise ValueError("its content changed since it was written (SHA-256 mismatch)")
    except (OSError, SafetensorError, KeyError, ValueError, TypeError, RecursionError) as error:
        reason = "it nests too deeply" if isinstance(error, RecursionError) else error
        warnings.warn(
            f"the cached decoding of {source!r} ({path}) is damaged ({reason}); decoding again",
            DataWarning,
            stacklevel=4,
        )
        return None
    return dataset, notes


def _check_layout(dataset: ImageDataset) -> None:
    images, labels = dataset.images, dataset.labels
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"its images are {images.dtype} of shape {tuple(images.shape)}")
    if 0 in images.shape:
        raise ValueError("it holds no pixels")
    if labels is None:
        return
    if labels.dtype != torch.int64 or labels.shape != (images.shape[0],):
        raise ValueError(f"its labels are {labels.dtype} of shape {tuple(labels.shape)}")
    if int(labels.min()) < 0 or int(labels.max()) >= len(dataset.class_names):
        raise ValueError("its labels do not index its class names")


def _write_entry(path: Path, dataset: ImageDataset, notes: list[str], source: str) -> None:
    tensors = {"images": dataset.images}
    if dataset.labels is not None:
        tensors["labels"] = dataset.labels
    metadata = {
        "fingerprint": dataset.fingerprint,
        "class_names": json.dumps(dataset.class_names),
        "warnings": json.dumps(notes),
        "sha256": _content_digest(dataset, notes),
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path) as temporary:
            write_safetensors(temporary, tensors, metadata)
    except OSError as error:
        warnings.warn(
            f"could not cache the decoded {source!r} in {path.parent} "
            f"({error.strerror or error}); it is decoded again next time (set $GENTOOL_CACHE to "
            "a writable folder)",
            DataWarning,
            stacklevel=4,
        )


def write_safetensors(
    path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]
) -> None:
    """Write `tensors` (contiguous, on the CPU) in the safetensors format straight from their
    memory: the library's own writer copies each tensor into a bytes object first, which for a
    data set is one more copy of it all."""
    header: dict[str, object] = {"__metadata__": metadata}
    offset = 0
    for name, tensor in tensors.items():
        size = tensor.numel() * tensor.element_size()
        header[name] = {
            "dtype": _SAFETENSORS_DTYPES[tensor.dtype],
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # the data starts 8-byte aligned
    with path.open("wb") as file:
        file.write(len(encoded).to_bytes(8, "little"))
        file.write(encoded)
        for tensor in tensors.values():
            file.write(memoryview(tensor.contiguous().numpy()).cast("B"))
