"""The on-disk cache of decoded data sets, keyed by a fingerprint of their content."""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path

from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from gentool.atomic import atomic_write
from gentool.data.dataset import DataWarning, ImageDataset

_CACHE_FORMAT = 2  # bump when decoding or the cache layout changes


def content_fingerprint(
    kind: str, image_size: int | None, parts: Iterable[tuple[str, bytes]]
) -> str:
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


def cached(fingerprint: str, source: str, build: Callable[[], ImageDataset]) -> ImageDataset:
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
