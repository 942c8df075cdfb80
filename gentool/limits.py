"""Sizes checked before anything that size is made.

A file or an option can declare any size: an .npz header terabytes of pixels, `--limit` a
billion images, `-o latent_dim=10000000000` a weight matrix larger than any machine. Allocating
first and failing later is no answer on Linux, where the kernel may grant the memory and then
kill the process when it is touched. So every size that comes from outside is set against the
memory this machine has before it is allocated.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO

from gentool.errors import GentoolError

MAX_IMAGE_SIDE = 8192  # pixels: the side of the largest image gentool decodes (8192² pixels)
MAX_IMAGE_FILE_BYTES = 2**30  # larger image files are skipped unread
MAX_CLASSES = 100_000  # class labels beyond this are refused as damage, not data
MAX_FOLDER_DEPTH = 32  # sub-folders below this many levels of a data folder are not searched
_MEMINFO = Path("/proc/meminfo")
SYSTEM_FOLDERS = ("/proc/", "/sys/", "/dev/")


def available_memory() -> int | None:
    """Bytes of memory that can be allocated without swapping, or None when unknown."""
    try:
        for line in _MEMINFO.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_allocation(
    nbytes: int, what: str, fix: str, error: type[GentoolError] = GentoolError
) -> None:
    """Refuse `what`, which needs `nbytes` of memory, when this machine does not have them."""
    available = available_memory()
    if available is not None and nbytes > available:
        raise error(
            f"{what} would take {format_bytes(nbytes)} of memory, and {format_bytes(available)} "
            f"are available: {fix}"
        )


def open_untrusted(path: str | os.PathLike[str]) -> BinaryIO:
    """Open a file from outside for reading, refusing what would block or never end.

    Only a regular file is read, and never so that a read can wait: a FIFO, a device or one of
    the kernel's files, which look regular but may block or consume what they are read for
    (/proc/kmsg), is an OSError."""
    if os.path.realpath(path).startswith(SYSTEM_FOLDERS):
        raise OSError(errno.EINVAL, "a file of the system, not data", os.fspath(path))
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", os.fspath(path))
        return os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise


def read_untrusted(path: str | os.PathLike[str], max_bytes: int) -> bytes:
    """The whole of a small file from outside (`open_untrusted`); ValueError past `max_bytes`."""
    with open_untrusted(path) as file:
        content = file.read(max_bytes + 1)
    if len(content) > max_bytes:
        raise ValueError(f"it is larger than {format_bytes(max_bytes)}")
    return content


def format_bytes(count: int) -> str:
    value = float(count)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if value < 1024 or unit == "PiB":
            return f"{value:.0f} {unit}" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{count} bytes"
