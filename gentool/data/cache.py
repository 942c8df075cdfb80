"""The on-disk cache of decoded data sets: one entry per data set, mapped into memory, not read.

An entry is two files in `cache_dir()`, named by the data set's key:

- KEY.pixels: the images as one flat uint8 array (N, C, H, W), then the labels, if any, as N
  little-endian int64;
- KEY.json: what the pixels are (shape, class names, what decoding warned about, their SHA-256,
  the digest of the source's bytes), written last, so that an entry without it was never
  finished.

The key hashes what decides the decoding without reading the images: each file's name, size and
modification and change times, and the preprocessing. A restart therefore lists the folder and
maps the entry; a training process then touches only the pages of the batches it reads, and the
kernel may drop them again, so the decoded set never counts against the process's own memory.
Every load checks an entry's layout, its key and its size; `--verify-data` also reads every source
file and every pixel again and compares their digests with the entry's.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import re
import stat
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gentool.data.dataset import DataWarning, ImageDataset
from gentool.limits import available_memory, open_untrusted, read_untrusted

DECODING_VERSION = 3  # bump when decoding changes what the same files decode to
ENTRY_FORMAT = 5  # bump when what an entry holds changes
MAX_NOTE_CHARS = 2000  # a class name or a note about skipped files; longer is damage
MAX_SIDECAR_BYTES = 2**26  # room for the most class names a data set may have
_HASH_CHUNK = 2**23
RECENT_NS = 2 * 10**9  # a file changed this recently is keyed by its content as well
PIXELS, SIDECAR, TEMPORARY, LOCK = ".pixels", ".json", ".tmp", ".lock"
# An entry's files, its lock, and the temporary files of one being written (mkstemp's part).
_ENTRY_NAME = re.compile(
    r"\.?[a-z]+-[0-9a-f]{32}\.v[0-9]+(\.json|\.pixels|\.lock|\.[A-Za-z0-9_]+\.tmp)"
)


class DataKey:
    """What decides a data set's decoding, hashed: the listing of its source (names, sizes,
    times) and the preprocessing."""

    def __init__(self, kind: str, image_size: int | None) -> None:
        self.kind = kind
        self._digest = hashlib.sha256(f"{kind}:{DECODING_VERSION}:{image_size}".encode())

    def add(self, *parts: bytes | int | str) -> None:
        for part in parts:
            encoded = str(part).encode() if isinstance(part, int | str) else part
            self._digest.update(len(encoded).to_bytes(8, "little") + encoded)

    def add_files(self, files: Sequence[tuple[str, str, os.stat_result]]) -> list[bytes | None]:
        """Add files, each (its name in the source, its path, its status), by name, size and
        times; and a file changed so recently that a change to follow could leave its times as
        they are (they move in ticks of a few milliseconds) by its content too. Each file's
        content SHA-256 where it was read (b"unreadable" where it could not be), for the
        decoding to check, else None."""
        listing = "".join(
            f"{name}\0{status.st_size}\0{status.st_mtime_ns}\0{status.st_ctime_ns}\n"
            for name, _, status in files
        )  # names hold no NUL: each record parses one way
        self._digest.update(listing.encode("utf-8", "surrogateescape"))
        recent_since = time.time_ns() - RECENT_NS
        digests: list[bytes | None] = []
        for _, path, status in files:
            if max(status.st_mtime_ns, status.st_ctime_ns) < recent_since:
                digests.append(None)
                continue
            try:
                with open_untrusted(path) as file:
                    digests.append(hashlib.sha256(file.read(status.st_size + 1)).digest())
            except OSError:
                digests.append(b"unreadable")  # and so left out when it is decoded
            self.add(digests[-1])
        return digests

    def __str__(self) -> str:
        return f"{self.kind}-{self._digest.hexdigest()[:32]}"


@dataclass(frozen=True)
class Built:
    """What a source's decoding gives besides the pixels written: labels and class names, and
    the digest of the bytes it read (which --verify-data compares with the source again)."""

    labels: np.ndarray | None
    class_names: tuple[str, ...]
    source_digest: str


def cache_dir() -> Path:
    """Where decoded data sets are cached: $GENTOOL_CACHE/data, else ~/.cache/gentool/data."""
    base = os.environ.get("GENTOOL_CACHE") or Path.home() / ".cache" / "gentool"
    return Path(base) / "data"


def read_entry(
    base: Path, key: str, source: str, *, verify: bool = False
) -> tuple[ImageDataset, list[str], str] | None:
    """The entry at `base` as (data set, notes, source digest), or None for a missing or
    damaged one (with a warning)."""
    sidecar, pixels = entry_files(base)
    try:
        if not sidecar.is_file():
            return None
        header = json.loads(read_untrusted(sidecar, MAX_SIDECAR_BYTES))
        if not isinstance(header, dict) or header.get("key") != key:
            raise ValueError("it is another data set's entry")
        if header.get("seal") != seal_of(header):
            raise ValueError("its header was edited: its seal does not match")
        shape, labelled, class_names, notes = _layout(header)
        status = os.stat(pixels)
        if not stat.S_ISREG(status.st_mode):
            raise ValueError(f"{pixels.name} is not a regular file")
        if status.st_size != header["bytes"]:
            raise ValueError(f"{pixels.name} holds {status.st_size} bytes, not {header['bytes']}")
        if [status.st_ino, status.st_mtime_ns] != header["pixel_file"]:
            raise ValueError(f"{pixels.name} is not the file its header was written with")
        images = np.memmap(pixels, np.uint8, mode="c", shape=shape)  # copied only if written
        _read_ahead(pixels, status.st_size)
        labels = None
        if labelled:
            labels = np.fromfile(pixels, "<i8", count=shape[0], offset=math.prod(shape))
            if labels.shape != (shape[0],) or labels.min() < 0 or labels.max() >= len(class_names):
                raise ValueError("its labels do not index its class names")
        if verify and content_digest(pixels) != header["sha256"]:
            raise ValueError("its pixels changed since it was written (SHA-256 mismatch)")
        dataset = ImageDataset(
            torch.from_numpy(images),
            None if labels is None else torch.from_numpy(labels.astype(np.int64)),
            tuple(class_names),
            source,
            header["fingerprint"],
        )
        return dataset, notes, header["source_digest"]
    except (OSError, KeyError, ValueError, TypeError, RecursionError) as error:
        reason = "it nests too deeply" if isinstance(error, RecursionError) else error
        warn_damaged(source, base, reason, stacklevel=4)
        return None


def _read_ahead(pixels: Path, size: int) -> None:
    """Ask the kernel to bring a set that fits in memory into its page cache in the background:
    batches gather images from all over the file, and one by one from disk they would come at
    the speed of random reads. A set larger than memory is left to be paged in as it is read."""
    available = available_memory()
    if not hasattr(os, "posix_fadvise") or available is None or size > available // 2:
        return
    with open(pixels, "rb") as file:
        os.posix_fadvise(file.fileno(), 0, 0, os.POSIX_FADV_WILLNEED)


def entry_files(base: Path) -> tuple[Path, Path]:
    """An entry's (header, pixels) files."""
    return base.with_name(base.name + SIDECAR), base.with_name(base.name + PIXELS)


def _layout(header: dict) -> tuple[tuple[int, ...], bool, list[str], list[str]]:
    """(shape, labelled, class names, notes) of an entry's header, checked; and the pixel file
    must hold exactly that many bytes."""
    shape, labelled = header["shape"], header["labelled"]
    class_names, notes = header["class_names"], header["notes"]
    if not isinstance(class_names, list) or not isinstance(notes, list):
        raise ValueError("its class names or notes are not lists")
    if not (
        isinstance(shape, list)
        and len(shape) == 4
        and all(isinstance(side, int) and side > 0 for side in shape)
        and shape[1] in (1, 3)
    ):
        raise ValueError(f"its shape {shape!r} is not that of images")
    if not all(isinstance(item, str) and len(item) <= MAX_NOTE_CHARS for item in class_names):
        raise ValueError("its class names or notes are not short strings")
    if not all(isinstance(item, str) and len(item) <= MAX_NOTE_CHARS for item in notes):
        raise ValueError("its class names or notes are not short strings")
    if not isinstance(header["fingerprint"], str) or not isinstance(header["sha256"], str):
        raise ValueError("its digests are not strings")
    if labelled is not True and labelled is not False:
        raise ValueError("it does not say whether it holds labels")
    expected = math.prod(shape) + (8 * shape[0] if labelled else 0)
    if header.get("bytes") != expected:
        raise ValueError(f"it declares {header.get('bytes')} bytes for {expected}")
    return tuple(shape), labelled, class_names, notes


def seal_of(header: dict) -> str:
    """SHA-256 of all that an entry's header says but its seal: an edit to any field shows,
    notes and key included, as does a header copied in from another entry."""
    fields = {name: value for name, value in header.items() if name != "seal"}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def fingerprint_of(
    digest: str, shape: tuple[int, ...], class_names: tuple[str, ...] | list[str], labelled: bool
) -> str:
    """A data set's identity, which a resumed run checks: the digest of its pixel file with what
    the pixels are. Its content, not where it came from: a copied folder, or a zip of it, is the
    same data."""
    identity = json.dumps([digest, list(shape), list(class_names), labelled])
    return f"decoded:{hashlib.sha256(identity.encode()).hexdigest()[:32]}"


def content_digest(pixels: Path) -> str:
    """SHA-256 of a pixel file, read in chunks: no copy of the data set in memory."""
    digest = hashlib.sha256()
    with open(pixels, "rb") as file:
        while chunk := file.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def warn_damaged(source: str, base: Path, reason: object, *, stacklevel: int) -> None:
    warnings.warn(
        f"the cached decoding of {source!r} ({base}) is damaged ({reason}); decoding again",
        DataWarning,
        stacklevel=stacklevel,
    )


@dataclass(frozen=True)
class CachedSet:
    """One entry of the cache, as `gentool data cache` lists it."""

    name: str
    source: str
    shape: tuple[int, ...]
    bytes: int


def cache_entries() -> list[CachedSet]:
    """The finished entries in the cache, largest first; damaged ones are listed as such."""
    entries = []
    for sidecar in _entry_files(SIDECAR):
        pixels = sidecar.with_suffix(PIXELS)
        try:
            header = json.loads(read_untrusted(sidecar, MAX_SIDECAR_BYTES))
            shape, source = tuple(header["shape"]), str(header["source"])
            size = pixels.stat().st_size + sidecar.stat().st_size
        except (OSError, ValueError, KeyError, TypeError):
            shape, source, size = (), "(damaged)", _size_of(sidecar) + _size_of(pixels)
        entries.append(CachedSet(sidecar.stem, source, shape, size))
    return sorted(entries, key=lambda entry: -entry.bytes)


def clear_cache() -> tuple[int, int, list[str]]:
    """Remove the cache's entries, finished or not, and nothing else that lies there (a cache
    folder may be shared, or set to a folder of the user's): (data sets removed, bytes freed,
    what could not be removed and why)."""
    removed, freed, kept = 0, 0, []
    for path in _entry_files(SIDECAR, PIXELS, TEMPORARY, LOCK):
        size = _size_of(path)
        try:
            if path.is_dir() and not path.is_symlink():
                raise IsADirectoryError(errno.EISDIR, "a folder, which gentool never writes")
            path.unlink()
        except FileNotFoundError:
            continue
        except OSError as error:
            kept.append(f"{path.name} ({error.strerror or error})")
            continue
        removed += path.name.endswith(SIDECAR)
        freed += size
    return removed, freed, kept


def _entry_files(*endings: str) -> list[Path]:
    """The files in the cache named as gentool names its entries, with one of `endings`."""
    folder = cache_dir()
    if not folder.is_dir():
        return []
    return sorted(
        folder / name
        for name in os.listdir(folder)
        if _ENTRY_NAME.fullmatch(name) and name.endswith(endings)
    )


def _size_of(path: Path) -> int:
    try:
        return path.lstat().st_size
    except OSError:
        return 0
