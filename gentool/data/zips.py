"""Data from a zip archive of images, read in place: labelled by class folders inside it, as a
folder is.

The archive is untrusted. Its directory is read only when the archive declares no more than
MAX_ARCHIVE_MEMBERS members (each costs memory to list); a member larger than
MAX_IMAGE_FILE_BYTES, once decompressed, is skipped unread, and a member is never decompressed
past the size its directory declares, so a zip bomb inflates no further than the images it
claims to hold. Members are never extracted: their names are labels, not paths.
"""

from __future__ import annotations

import os
import struct
import warnings
import zipfile
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from gentool.data.cache import DataKey
from gentool.data.dataset import DataWarning, ImageDataset
from gentool.data.decoding import Tracker
from gentool.data.folders import Listing, load_listing, sample
from gentool.errors import DataError
from gentool.image_files import IMAGE_SUFFIXES, ImageFile
from gentool.limits import MAX_FOLDER_DEPTH, MAX_IMAGE_FILE_BYTES, open_untrusted
from gentool.terminal import counted

MAX_ARCHIVE_MEMBERS = 4_000_000  # ImageNet's 1.28 M images three times over
_END_OF_DIRECTORY = b"PK\x05\x06"
_ZIP64_LOCATOR = b"PK\x06\x07"
_ZIP64_END = b"PK\x06\x06"
_MAX_COMMENT = 2**16 - 1


def load_zip(
    path: Path,
    source: str,
    image_size: int | None,
    limit: int | None,
    *,
    verify: bool = False,
    track: Tracker | None = None,
) -> ImageDataset:
    members = sample(_image_members(path, source), limit)
    key = DataKey("zip", image_size)
    try:
        key.add_files([("", str(path), path.stat())])
    except OSError as error:
        raise DataError(f"cannot read {source!r}: {error.strerror or error}") from None
    names = [member_parts(member.filename) for member in members]
    top = {parts[0] for parts in names}
    if len(top) == 1 and all(len(parts) > 1 for parts in names):
        names = [parts[1:] for parts in names]  # one folder that holds everything is no class
    items = []
    for member in members:
        items.append(ImageFile(str(path), member.filename, member.file_size, 0))
        key.add(member.filename, member.file_size, member.CRC)
    listing = Listing(
        items, names, lambda index: f"{source}:{members[index].filename}", key, source
    )
    return load_listing(listing, source, image_size, verify=verify, track=track)


def _image_members(path: Path, source: str) -> list[zipfile.ZipInfo]:
    """The archive's members with an image suffix, not hidden, not too deep and small enough."""
    try:
        with open_untrusted(path) as file:
            declared = declared_members(file)
            if declared > MAX_ARCHIVE_MEMBERS:
                raise DataError(
                    f"{source!r} declares {declared} members, more than the {MAX_ARCHIVE_MEMBERS} "
                    "gentool lists: split the archive, or extract it and give the folder"
                )
            with zipfile.ZipFile(file) as archive:
                infos = archive.infolist()
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, struct.error) as error:
        raise DataError(f"cannot read {source!r} as a zip archive: {error}") from None
    # A name appended again replaces the first, however it is written ("./a.png", "a\\b.png").
    latest = {member_parts(info.filename): info for info in infos}
    members, too_large, escaping, repeated = [], [], [], []
    for info in infos:
        parts = member_parts(info.filename)
        if (
            info.is_dir()
            or not parts
            or PurePosixPath(parts[-1]).suffix.lower() not in IMAGE_SUFFIXES
            or any(part.startswith(".") and part != ".." for part in parts)
            or len(parts) > MAX_FOLDER_DEPTH + 1
        ):
            continue
        if info.filename.replace("\\", "/").startswith("/") or ".." in parts:
            escaping.append(info)
        elif latest[parts] is not info:
            repeated.append(info)
        else:
            (too_large if info.file_size > MAX_IMAGE_FILE_BYTES else members).append(info)
    _warn_skipped(source, too_large, escaping, repeated)
    if not members:
        raise DataError(
            f"no images found in {source!r} (looked for {', '.join(sorted(IMAGE_SUFFIXES))})"
        )
    return sorted(members, key=lambda info: member_parts(info.filename))


def member_parts(name: str) -> tuple[str, ...]:
    """A member's path as parts; a backslash, as some Windows tools write, separates them too."""
    return tuple(part for part in name.replace("\\", "/").split("/") if part not in ("", "."))


def _warn_skipped(
    source: str,
    too_large: list[zipfile.ZipInfo],
    escaping: list[zipfile.ZipInfo],
    repeated: list[zipfile.ZipInfo],
) -> None:
    skipped = [
        (too_large, "image", f"in {source!r} larger than {MAX_IMAGE_FILE_BYTES // 2**20} MiB"),
        (escaping, "member", f"of {source!r} whose names are absolute or contain '..'"),
        (repeated, "member", f"of {source!r} whose names a later member repeats"),
    ]
    for members, noun, what in skipped:
        if members:
            warnings.warn(
                f"skipped {counted(len(members), noun)} {what} (first: {members[0].filename})",
                DataWarning,
                stacklevel=5,
            )


def declared_members(file: BinaryIO) -> int:
    """How many members a zip archive's end-of-directory record declares, read before its
    directory is."""
    size = file.seek(0, os.SEEK_END)
    tail_start = max(0, size - 22 - _MAX_COMMENT)
    file.seek(tail_start)
    tail = file.read()
    position = tail.rfind(_END_OF_DIRECTORY)
    if position < 0 or len(tail) - position < 22:
        raise zipfile.BadZipFile("it has no end-of-directory record")
    (count,) = struct.unpack("<H", tail[position + 10 : position + 12])
    locator = tail[position - 20 : position] if position >= 20 else b""
    if count == 0xFFFF and locator.startswith(_ZIP64_LOCATOR):
        (offset,) = struct.unpack("<Q", locator[8:16])
        file.seek(offset)
        record = file.read(56)
        if not record.startswith(_ZIP64_END):
            raise zipfile.BadZipFile("its zip64 end-of-directory record is missing")
        (count,) = struct.unpack("<Q", record[32:40])
    file.seek(0)
    return count
