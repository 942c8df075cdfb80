"""`--log csv`: the logged values as one table, metrics.csv in the run folder.

A row per logged step (step, epoch, phase for models trained in phases, then the values), and a
row per evaluation at the step it followed: the rows of metrics.jsonl, for a spreadsheet or
`pandas.read_csv`. The header is the union of the names logged so far; a name first logged
later (an evaluation's metrics) rewrites the file once with the wider header, atomically.

Rows are appended whole, each batch in one write, and a write the disk cuts short is taken back:
a crash leaves no half row. A resumed run keeps the rows up to its checkpoint and appends after
them, so the table never holds a step twice.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from gentool.atomic import atomic_write
from gentool.limits import format_bytes, open_untrusted
from gentool.loggers import RunInfo, StepValues
from gentool.run_files import METRICS_CSV_FILE

MAX_TABLE_BYTES = 2**32  # far more than a billion-step run writes; a larger file is not ours


class CsvLogger:
    """Appends each logged step to RUN/metrics.csv (images and text have no place in it)."""

    def __init__(self, run_dir: Path, run: RunInfo) -> None:
        self.path = run_dir / METRICS_CSV_FILE
        self.columns: list[str] = []
        if self.path.exists():  # a resumed run's: keep its rows up to the checkpoint
            self.columns = self._rewrite(keep_through_step=run.start_step)
        self._descriptor: int | None = None

    def scalars(self, steps: Sequence[StepValues]) -> None:
        rows = [_row(logged) for logged in steps]
        names = dict.fromkeys(name for row in rows for name in row)
        new = [name for name in names if name not in self.columns]
        if new:
            self.close()
            self.columns = self._rewrite(columns=[*self.columns, *new])
        self._append(rows)

    def close(self) -> None:
        if self._descriptor is not None:
            os.close(self._descriptor)
            self._descriptor = None

    def _append(self, rows: list[dict[str, Any]]) -> None:
        if self._descriptor is None:
            self._descriptor = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        buffer = io.StringIO()
        csv.DictWriter(buffer, self.columns, lineterminator="\n").writerows(rows)
        data = buffer.getvalue().encode()
        size = os.fstat(self._descriptor).st_size
        written = os.write(self._descriptor, data)
        if written < len(data):  # a full disk: take back the part of a row that fitted
            os.ftruncate(self._descriptor, size)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.path))

    def _rewrite(
        self, *, columns: list[str] | None = None, keep_through_step: int | None = None
    ) -> list[str]:
        """Replace the table, atomically, by its rows (those up to `keep_through_step`) under
        the header `columns` (by default its own); the header written."""
        with contextlib.ExitStack() as stack:
            old_columns: list[str] = []
            rows: Iterable[dict[str, str]] = ()
            if self.path.exists():
                old_columns, rows = _read(stack.enter_context(open_untrusted(self.path)))
            header = old_columns if columns is None else columns
            temporary = stack.enter_context(atomic_write(self.path))
            with temporary.open("w", encoding="utf-8", newline="") as file:
                writer = csv.DictWriter(file, header, lineterminator="\n", extrasaction="ignore")
                writer.writeheader()
                last = math.inf if keep_through_step is None else keep_through_step
                writer.writerows(
                    row for row in rows if (step := _step_of(row)) is not None and step <= last
                )
        return header


def _row(logged: StepValues) -> dict[str, Any]:
    phase = {"phase": logged.phase} if logged.phase else {}
    return {"step": logged.step, "epoch": logged.epoch, **phase, **logged.values}


def _read(file: BinaryIO) -> tuple[list[str], Iterator[dict[str, str]]]:
    """A table's header and its whole rows (a row a power cut tore is left out)."""
    size = os.fstat(file.fileno()).st_size
    if size > MAX_TABLE_BYTES:
        raise OSError(errno.EFBIG, f"{format_bytes(size)}, more than gentool writes", file.name)
    text = io.TextIOWrapper(file, encoding="utf-8", errors="replace", newline="")
    reader = csv.DictReader(line for line in text if line.endswith("\n"))
    return [name for name in reader.fieldnames or () if name], reader


def _step_of(row: dict[str, str]) -> int | None:
    text = row.get("step") or ""
    return int(text) if text.isascii() and text.isdigit() else None
