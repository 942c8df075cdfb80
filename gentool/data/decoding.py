"""Decoding many image files at the machine's speed: in worker processes, as Pillow holds the
interpreter's lock for much of a small image's decoding, with the results written in order to
the data set's cache entry as they arrive, and a progress bar."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import warnings
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor

from gentool.data.dataset import DataWarning
from gentool.data.pixels import PixelWriter
from gentool.errors import DataError
from gentool.image_files import (
    Decoded,
    FileChanged,
    ImageFile,
    close_archives,
    decode_files,
    read_content,
    start_worker,
)
from gentool.progress import Tracker
from gentool.terminal import counted

# Below this many files, starting worker processes costs more than it saves.
MIN_FILES_FOR_WORKERS = 512
CHUNK_FILES = 64  # files a worker decodes per task: few enough to keep every worker busy


class DataChanged(DataError):
    """A file changed between its listing and its decoding."""


def decode_into(
    writer: PixelWriter,
    items: list[ImageFile],
    image_size: int | None,
    source: str,
    *,
    names: Callable[[int], str],
    track: Tracker | None = None,
) -> tuple[list[int], str]:
    """Decode `items` in order into `writer`; the indexes of those kept, and the digest of the
    bytes read (each file's SHA-256 in order, which --verify-data recomputes from the source).

    A file that cannot be read or decoded is skipped with a count, whatever it raised; one that
    changed since it was listed stops the decoding (DataChanged), as its content is not what the
    data set's key says. `names(index)` is how a message shows item `index`.
    """
    advance = track(f"decoding {source}", len(items)) if track is not None else None
    kept, failures, digest = [], [], hashlib.sha256()
    try:
        for start, results in _decoded_chunks(items, image_size):
            writer.write([result.pixels for result in results if result.pixels is not None])
            for offset, result in enumerate(results):
                digest.update(result.sha256 or b"unreadable")
                if result.pixels is not None:
                    kept.append(start + offset)
                else:
                    failures.append(f"{names(start + offset)}: {result.failure}")
            if advance is not None:
                advance(len(results))
    except FileChanged as changed:
        index = next(i for i, item in enumerate(items) if item.path == str(changed))
        raise DataChanged(
            f"{names(index)} changed while the data was read: run again once it is settled"
        ) from None
    finally:
        close_archives()  # the next decoding may find an archive replaced
    _count_failures(failures, len(items), source)
    return kept, digest.hexdigest()


def content_digest_of(items: list[ImageFile]) -> str:
    """The digest `decode_into` gives for `items`, from their bytes as they are now."""
    digest = hashlib.sha256()
    try:
        for item in items:
            try:
                digest.update(hashlib.sha256(read_content(item)).digest())
            except FileChanged:
                digest.update(b"changed")  # the key no longer matches either: decoded again
            except Exception:  # unreadable now; as it was when decoded, or not
                digest.update(b"unreadable")
    finally:
        close_archives()
    return digest.hexdigest()


def _decoded_chunks(
    items: list[ImageFile], image_size: int | None
) -> Iterator[tuple[int, list[Decoded]]]:
    """(first index, results) per chunk of `items`, in order. Worker processes decode when the
    files are many and the machine has cores to spare; at most two chunks per worker are in
    flight, so results waiting to be written stay few."""
    starts = range(0, len(items), CHUNK_FILES)
    workers = min(os.cpu_count() or 1, -(-len(items) // CHUNK_FILES))
    # Forked: a spawned worker would first run the caller's main script again (a user's script
    # without a __main__ guard would start over in every worker), and a forked one starts at
    # once. It runs Pillow and NumPy only, never the locks of the parent's threads.
    if workers < 2 or len(items) < MIN_FILES_FOR_WORKERS or not _can_fork():
        for start in starts:
            yield start, decode_files(items[start : start + CHUNK_FILES], image_size)
        return
    context = multiprocessing.get_context("fork")
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=start_worker)
    try:
        pending: deque[tuple[int, Future[list[Decoded]]]] = deque()
        for start in starts:
            chunk = items[start : start + CHUNK_FILES]
            pending.append((start, pool.submit(decode_files, chunk, image_size)))
            if len(pending) >= 2 * workers:
                first, future = pending.popleft()
                yield first, future.result()
        while pending:
            first, future = pending.popleft()
            yield first, future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _can_fork() -> bool:
    return "fork" in multiprocessing.get_all_start_methods()


def _count_failures(failures: list[str], total: int, source: str) -> None:
    if len(failures) == total:
        raise DataError(
            f"none of the {counted(total, 'image file')} in {source!r} could be decoded "
            f"(first: {failures[0]})"
        )
    if failures:
        warnings.warn(
            f"skipped {len(failures)} of {total} files that could not be decoded "
            f"(first: {failures[0]})",
            DataWarning,
            stacklevel=4,
        )
