"""Atomic file writes: a reader (or a crash) sees the old file or the new one, never half of one."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

_NAME_ROOM = 255 - len("..12345678.tmp")  # a name's bytes that leave room for mkstemp's


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], *, make_parents: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `path`; when the block succeeds, move it over `path`
    (creating its missing parent folders first with `make_parents`).

    The data is fsynced before the rename and the folder after it, so a power cut cannot leave a
    renamed but empty file. If the block raises (a full disk, say), `path` is left untouched.
    An OSError names `path`, not the temporary file. A device or a FIFO at `path` is written
    into, not replaced: replacing /dev/null with a file would break the system for everyone.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "is a folder, not a file", str(path))
    if path.exists() and not path.is_file():
        with _written_into(path) as temporary:
            yield temporary
        return
    if make_parents:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except FileExistsError:  # a file where a folder of the path should be
            raise NotADirectoryError(
                errno.ENOTDIR, "a part of the path is a file, not a folder", str(path)
            ) from None
    try:
        descriptor, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as error:
        raise type(error)(error.errno, error.strerror, str(path)) from None
    os.close(descriptor)
    temporary = Path(name)
    try:
        # mkstemp makes the file private (0600); the result gets the mode a plain write would.
        temporary.chmod(_mode_for(path))
        yield temporary
        fsync_path(temporary)
        os.replace(temporary, path)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        raise type(error)(error.errno, error.strerror, str(path)) from None
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    fsync_path(path.parent)


@contextlib.contextmanager
def _written_into(path: Path) -> Iterator[Path]:
    """Yield a temporary path; when the block succeeds, copy what it holds into `path`, a device
    or a FIFO (one with no reader is an error, not a wait)."""
    with tempfile.TemporaryDirectory() as folder:
        temporary = Path(folder) / "content"
        yield temporary
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as error:
            raise type(error)(error.errno, error.strerror, str(path)) from None
        with os.fdopen(descriptor, "wb") as target, temporary.open("rb") as source:
            shutil.copyfileobj(source, target)


def _mode_for(path: Path) -> int:
    """The replaced file's permissions, or those the umask gives a new file."""
    try:
        return path.stat().st_mode & 0o777
    except FileNotFoundError:
        return new_file_mode()


def new_file_mode() -> int:
    """The permissions the umask gives a new file."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Atomically replace `path` with `text` (UTF-8)."""
    with atomic_write(path) as temporary:
        temporary.write_text(text, encoding="utf-8")


def fsync_path(path: Path) -> None:
    """Flush a file's or a folder's contents to disk."""
    flags = os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0)
    try:
        descriptor = os.open(path, flags)
    except OSError:  # some platforms cannot open folders; the rename is still atomic there
        return
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
