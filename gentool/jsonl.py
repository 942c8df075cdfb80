"""metrics.jsonl and epochs.jsonl: one JSON object a line, each with the step it belongs to.

One writer and one reader for both files. Lines are strict JSON: a value that is not a finite
number is written as the string "nan", "inf" or "-inf", which plots and health checks skip.
Reading is forgiving, as the files are appended to by a process that may be killed mid-line and
may be edited by hand: a line that is not a JSON object with a whole, non-negative "step" is
left out.
"""

from __future__ import annotations

import errno
import io
import json
import math
import os
import stat
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

from gentool.atomic import write_text
from gentool.errors import GentoolError
from gentool.limits import format_bytes, open_untrusted

MAX_LINE_CHARS = 2**20  # far longer than any line gentool writes
MAX_FILE_BYTES = 2**32  # a billion-step run's log is smaller


def encode(values: Mapping[str, Any]) -> str:
    """One line of JSON (without its newline)."""
    return json.dumps(
        {key: _finite_or_text(value) for key, value in values.items()}, allow_nan=False
    )


def _finite_or_text(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def step_of(line: str) -> int | None:
    """The step a line belongs to, or None for a torn or foreign line."""
    record = _record(line)
    return None if record is None else record["step"]


def _record(line: str) -> dict[str, Any] | None:
    """The line's object, or None unless it is one with a whole, non-negative "step"."""
    try:
        record = json.loads(line)
    except (ValueError, RecursionError):
        return None
    step = record.get("step") if isinstance(record, dict) else None
    if isinstance(step, int) and not isinstance(step, bool) and step >= 0:
        return record
    return None


def read_lines(path: Path) -> list[dict[str, Any]]:
    """The file's lines that gentool could have written, in file order ([] without a file)."""
    return list(iter_lines(path))


def iter_lines(path: Path) -> Iterator[dict[str, Any]]:
    """`read_lines` one line at a time, for a history too long to hold."""
    for line in _lines(path):
        if (record := _record(line)) is not None:
            yield record


def _lines(path: Path) -> Iterator[str]:
    """The file's lines, each with its newline; a line longer than any gentool writes (a
    damaged or hostile file, say a sparse terabyte of zeros) is skipped without being held."""
    if not path.exists():
        return
    with open_untrusted(path) as binary:
        size = os.fstat(binary.fileno()).st_size
        if size > MAX_FILE_BYTES:
            raise GentoolError(
                f"{path} is {format_bytes(size)}, more than gentool ever writes there: move it "
                "aside"
            )
        file = io.TextIOWrapper(binary, encoding="utf-8", errors="replace")
        while line := file.readline(MAX_LINE_CHARS):
            if line.endswith("\n") or len(line) < MAX_LINE_CHARS:
                yield line
                continue
            while (rest := file.readline(MAX_LINE_CHARS)) and not rest.endswith("\n"):
                pass  # the rest of an overlong line


def _open_for_appending(path: Path) -> TextIO:
    """`path` opened to append to, created if missing; refused unless a regular file (a FIFO
    would block, a device swallow the lines)."""
    if path.exists() and not path.is_file():
        raise OSError(errno.EINVAL, "not a regular file", str(path))
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK, 0o666)
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):  # it became something else meanwhile
        os.close(descriptor)
        raise OSError(errno.EINVAL, "not a regular file", str(path))
    return os.fdopen(descriptor, "a", encoding="utf-8")


class JsonLinesWriter:
    """Appends lines to one file, kept open while a command writes it.

    `keep_through_step` (a resume) first drops the lines of steps past the checkpoint, which the
    resumed run is about to log again, and any torn line.
    """

    def __init__(self, path: Path, *, keep_through_step: int | None = None) -> None:
        self.path = path
        if keep_through_step is not None and path.is_file():
            kept = [
                line if line.endswith("\n") else line + "\n"
                for line in _lines(path)
                if (step := step_of(line)) is not None and step <= keep_through_step
            ]
            write_text(path, "".join(kept))
        self._file = _open_for_appending(path)

    def write(self, lines: Iterable[Mapping[str, Any]]) -> None:
        """Append `lines`; they reach the file (not yet the disk) before this returns."""
        text = "".join(encode(values) + "\n" for values in lines)
        if text:
            self._file.write(text)
            self._file.flush()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> JsonLinesWriter:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def append_line(path: Path, values: Mapping[str, Any]) -> None:
    """Append one line to a file that no writer holds open (an evaluation after training)."""
    with JsonLinesWriter(path) as writer:
        writer.write([values])
