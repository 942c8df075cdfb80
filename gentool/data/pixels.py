"""A data set from its cache entry, or decoded into a new one: written as it is decoded, so that
decoding holds one chunk of images in memory, never the whole set."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from gentool.atomic import fsync_path, new_file_mode, write_text
from gentool.data.cache import (
    ENTRY_FORMAT,
    LOCK,
    MAX_NOTE_CHARS,
    Built,
    DataKey,
    cache_dir,
    content_digest,
    entry_files,
    fingerprint_of,
    read_entry,
    seal_of,
    warn_damaged,
)
from gentool.data.dataset import DataWarning, ImageDataset
from gentool.errors import DataError

try:
    import fcntl
except ImportError:  # not on POSIX: two processes decoding one set at once may race there
    fcntl = None  # type: ignore[assignment]

_COMPACT_CHUNK = 2**24  # bytes of pixels read at a time when a grey set drops its copies


def cached(
    key: DataKey,
    source: str,
    build: Callable[[PixelWriter], Built],
    *,
    source_digest: Callable[[], str] | None = None,
) -> ImageDataset:
    """The data set from its cache entry, or built (its pixels written to a new entry as they
    are decoded) and then mapped.

    `source_digest` (given with --verify-data) reads the source again: an entry whose source or
    pixels no longer match their digests is decoded again. What building warned about (files
    skipped, say) is kept with the entry and said again on every load: a cached data set still
    has the holes its files had.
    """
    base = cache_dir() / f"{key}.v{ENTRY_FORMAT}"
    with entry_lock(base, exclusive=False):  # never between another's pixel file and header
        entry = read_entry(base, str(key), source, verify=source_digest is not None)
    if entry is not None and source_digest is not None and entry[2] != source_digest():
        warn_damaged(source, base, "its files changed since it was cached", stacklevel=3)
        entry = None
    if entry is not None:
        dataset, notes, _ = entry
    else:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", DataWarning)
            writer = PixelWriter(base, str(key), source)
            try:
                built = build(writer)
            except BaseException:
                writer.discard()
                raise
        notes = _notes(caught)
        dataset = writer.finish(built, notes)
    for note in notes:
        warnings.warn(note, DataWarning, stacklevel=3)
    return dataset


def _notes(caught: list[warnings.WarningMessage]) -> list[str]:
    """What building warned about the data, to say again on every load; other warnings are
    passed on as they came."""
    notes = []
    for warning in caught:
        if issubclass(warning.category, DataWarning):
            notes.append(str(warning.message)[:MAX_NOTE_CHARS])
        else:
            warnings.warn_explicit(
                warning.message, warning.category, warning.filename, warning.lineno
            )
    return notes


class PixelWriter:
    """Images appended in order, in colour (N, 3, H, W) until the end shows them all grey.

    A cache that cannot be written (a read-only or full disk, $GENTOOL_CACHE naming a file)
    costs a warning, never the run: the images go on in memory, those already written with them.
    """

    def __init__(self, base: Path, key: str, source: str) -> None:
        self.base, self.key, self.source = base, key, source
        self.count = 0
        self.size: tuple[int, int] | None = None  # (height, width) of every image
        self.all_grey = True
        self._channels_written = 3  # 1 once an all-grey file has been compacted
        self._memory: list[np.ndarray] | None = None  # once the cache cannot be written
        self._descriptor: int | None = None
        self._temporary: Path | None = None
        try:
            base.parent.mkdir(parents=True, exist_ok=True)
            self._descriptor, name = tempfile.mkstemp(
                dir=base.parent, prefix=f".{base.name}.", suffix=".tmp"
            )
            self._temporary = Path(name)
            os.fchmod(self._descriptor, new_file_mode())  # as the header's: mkstemp's is 0600
        except OSError as error:
            self._fall_back(error)

    def write(self, images: Sequence[np.ndarray]) -> None:
        """Append images, each (H, W) grey or (H, W, 3) RGB uint8, all of one size."""
        if not images:
            return
        height, width = self._common_size(images)
        chunk = np.empty((len(images), 3, height, width), dtype=np.uint8)
        for index, image in enumerate(images):
            chunk[index] = image[None] if image.ndim == 2 else image.transpose(2, 0, 1)
        self.all_grey = self.all_grey and all(image.ndim == 2 for image in images)
        if self._descriptor is not None:
            try:
                _write_all(self._descriptor, chunk)
            except OSError as error:
                self._fall_back(error)
        if self._memory is not None:
            self._memory.append(chunk)
        self.count += len(images)

    def finish(self, built: Built, notes: list[str]) -> ImageDataset:
        """The data set written, mapped from its entry (or from memory, where it could not be)."""
        if self.count == 0 or self.size is None:
            raise DataError(f"no image of {self.source!r} could be decoded")
        labels = None if built.labels is None else built.labels.astype("<i8")
        if self._descriptor is not None:
            try:
                return self._commit(labels, built, notes)
            except OSError as error:
                self._fall_back(error)
        assert self._memory is not None
        pixels = np.concatenate(self._memory)
        if self.all_grey:
            pixels = np.ascontiguousarray(pixels[:, :1])
        digest = hashlib.sha256(pixels.data)
        if labels is not None:
            digest.update(labels.data)
        labelled = labels is not None
        fingerprint = fingerprint_of(digest.hexdigest(), pixels.shape, built.class_names, labelled)
        return ImageDataset(
            torch.from_numpy(pixels),
            None if labels is None else torch.from_numpy(labels.astype(np.int64)),
            built.class_names,
            self.source,
            fingerprint,
        )

    def discard(self) -> None:
        """Drop what was written: the decoding failed."""
        self._close()
        if self._temporary is not None:
            self._temporary.unlink(missing_ok=True)

    def _common_size(self, images: Sequence[np.ndarray]) -> tuple[int, int]:
        sizes = {image.shape[:2] for image in images} | ({self.size} if self.size else set())
        if len(sizes) > 1:
            shown = ", ".join(f"{w}×{h}" for h, w in sorted(sizes)[:4])
            raise DataError(
                f"images in {self.source!r} have different sizes ({shown}) and no size was set "
                "to fit them to: set the model's image_size (gentool fid: --image-size)"
            )
        (self.size,) = sizes
        return self.size

    def _commit(self, labels: np.ndarray | None, built: Built, notes: list[str]) -> ImageDataset:
        """Finish the pixel file, move it into place and write the header that completes it."""
        assert self._temporary is not None and self.size is not None
        channels = 1 if self.all_grey else 3
        if self.all_grey:
            self._compact_grey()
        if labels is not None:
            _write_all(self._descriptor, labels)
        self._close()
        fsync_path(self._temporary)
        shape = (self.count, channels, *self.size)
        digest = content_digest(self._temporary)
        labelled = labels is not None
        header = {
            "format": ENTRY_FORMAT,
            "key": self.key,
            "source": self.source,
            "shape": list(shape),
            "labelled": labelled,
            "class_names": list(built.class_names),
            "notes": notes,
            "sha256": digest,
            "fingerprint": fingerprint_of(digest, shape, built.class_names, labelled),
            "source_digest": built.source_digest,
        }
        sidecar, pixels = entry_files(self.base)
        with entry_lock(self.base, exclusive=True):
            os.replace(self._temporary, pixels)
            self._temporary = pixels  # until its header is written, an unfinished entry
            written = pixels.stat()
            header["bytes"] = written.st_size
            header["pixel_file"] = [written.st_ino, written.st_mtime_ns]
            header["seal"] = seal_of(header)
            write_text(sidecar, json.dumps(header, ensure_ascii=False))
            entry = read_entry(self.base, self.key, self.source)
        if entry is None:
            raise DataError(f"the decoded {self.source!r} could not be read back from {pixels}")
        return entry[0]

    def _compact_grey(self) -> None:
        """Keep one channel of an all-grey set, in place: image i's first channel moves to
        slot i of the file, then the file is cut."""
        assert self.size is not None and self._descriptor is not None
        plane = self.size[0] * self.size[1]
        per_chunk = max(1, _COMPACT_CHUNK // (3 * plane))
        for start in range(0, self.count, per_chunk):
            count = min(per_chunk, self.count - start)
            colour = os.pread(self._descriptor, count * 3 * plane, start * 3 * plane)
            grey = np.frombuffer(colour, np.uint8).reshape(count, 3, plane)[:, 0]
            os.pwrite(self._descriptor, np.ascontiguousarray(grey).data, start * plane)
        os.ftruncate(self._descriptor, self.count * plane)
        os.lseek(self._descriptor, 0, os.SEEK_END)
        self._channels_written = 1

    def _fall_back(self, error: OSError) -> None:
        warnings.warn(
            f"could not cache the decoded {self.source!r} in {self.base.parent} "
            f"({error.strerror or error}); it is decoded again next time (set $GENTOOL_CACHE to "
            "a writable folder)",
            DataWarning,
            stacklevel=2,
        )
        self._memory = []
        if self._temporary is not None and self.count and self.size is not None:
            shape = (self.count, self._channels_written, *self.size)
            done = np.fromfile(self._temporary, np.uint8, count=int(np.prod(shape)))
            self._memory.append(done.reshape(shape))
        self.discard()
        self._temporary = None

    def _close(self) -> None:
        if self._descriptor is not None:
            os.close(self._descriptor)
            self._descriptor = None


@contextlib.contextmanager
def entry_lock(base: Path, *, exclusive: bool) -> Iterator[None]:
    """Hold an entry's lock: exclusive while its files are put in place, shared while they are
    read. Two processes that decode one set at once (those of a --nproc run on a cold cache)
    must not leave one's pixel file under the other's header, nor read a pair half replaced.
    A cache that cannot hold a lock file is read and written unlocked."""
    try:
        descriptor = os.open(f"{base}{LOCK}", os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        descriptor = None
    try:
        if descriptor is not None and fcntl is not None:
            fcntl.flock(descriptor, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        if descriptor is not None:
            os.close(descriptor)


def _write_all(descriptor: int | None, array: np.ndarray) -> None:
    assert descriptor is not None
    view = memoryview(np.ascontiguousarray(array)).cast("B")
    while view:
        view = view[os.write(descriptor, view) :]
