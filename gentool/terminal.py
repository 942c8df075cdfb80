"""Writing to a terminal, a pipe or a file that may stop taking what gentool prints, and
showing names gentool did not choose.

Every command prints through a `StreamConsole`. When its stream refuses output (the reader of
a pipe is gone, as after `| head`; the disk behind `> log` is full; the terminal went away) it
stops writing instead of raising: a training run goes on training and checkpointing without
its display, and the command, once done, asks `lost` how to end. The console script also wraps
the standard streams themselves in `GuardedOutput`, for whatever else prints (a plugin's
print(), Typer's help), and reopens one the shell closed on /dev/null.

`printable` writes what a reader could be misled or a writer tripped by as escapes: control
characters, and the bytes of a file name that are not UTF-8, which Python holds as lone
surrogates that no encoder accepts. `escaped` does that too for text put into a console
message: an escape sequence in a file name, a run name, a plugin's description or an exception
could otherwise move the cursor, recolour or erase what the user sees, and `[red]` in it would
be read as Rich markup.
"""

from __future__ import annotations

import errno
import os
import re
import sys
from typing import IO, Any

from rich.console import Console
from rich.markup import escape

# C0 and C1 controls and DEL; the line separators; the bidirectional embeddings, overrides and
# isolates, which reorder what follows them; and lone surrogates.
_UNPRINTABLE = re.compile(
    r"[\x00-\x1f\x7f-\x9f" r"\u2028\u2029" r"\u202a-\u202e\u2066-\u2069" r"\ud800-\udfff]"
)


def printable(text: object) -> str:
    r"""`text` with its control characters and undecodable bytes written as Python escapes:
    `\x1b`, `\n`, `\u202e`, and `\xff` for a byte `os.fsdecode` could not decode."""
    return _UNPRINTABLE.sub(_escape, str(text))


def escaped(text: object) -> str:
    """`text` from outside gentool, to put into a console message: printable, and never markup."""
    return escape(printable(text))


def counted(number: int, noun: str) -> str:
    """A count with its noun, in the singular for one: "1 epoch", "3 epochs"."""
    return f"{number} {noun}" + ("" if number == 1 else "s")


def _escape(match: re.Match[str]) -> str:
    character = match.group()
    if "\udc80" <= character <= "\udcff":  # os.fsdecode's stand-in for the byte 0x80-0xff
        return f"\\x{ord(character) - 0xDC00:02x}"
    return character.encode("unicode_escape").decode("ascii")


class StreamConsole(Console):
    """A Rich console that drops its output, never the program, once its stream refuses it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Emoji codes are markup escape() leaves alone: a file named ":fire:.png" must show so.
        super().__init__(*args, **{"emoji": False, **kwargs})
        self._lost: OSError | None = None
        if self._width == 0:  # COLUMNS=0, which Rich takes as no room to print anything in
            self._width = None

    @property
    def lost(self) -> OSError | None:
        """Why the stream stopped taking output, once it has (here, or in a GuardedOutput)."""
        return self._lost or getattr(self.file, "lost", None)

    def _check_buffer(self) -> None:  # where Rich writes out what was printed, on any thread
        try:
            super()._check_buffer()
        except OSError as error:
            self._stop_writing(error)

    def on_broken_pipe(self) -> None:
        # Rich's own exits the program, which would end a training run mid-epoch.
        self._stop_writing(BrokenPipeError(errno.EPIPE, os.strerror(errno.EPIPE)))

    def _stop_writing(self, error: OSError) -> None:
        self.quiet = True
        if self._lost is None:
            self._lost = error
        discard_output(self.file)


class GuardedOutput:
    """Standard output or error that drops, never raises, once its descriptor refuses what is
    written: a plugin's print() in training_step must not end a training whose pipe's reader
    left. Everything but writing is the wrapped stream's."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        self.lost: OSError | None = None  # why the stream stopped taking output, once it has

    def write(self, text: str) -> int:
        if self.lost is None:
            try:
                return self._stream.write(text)
            except OSError as error:
                self._stop_writing(error)
        return len(text)

    def flush(self) -> None:
        if self.lost is None:
            try:
                self._stream.flush()
            except OSError as error:
                self._stop_writing(error)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    def _stop_writing(self, error: OSError) -> None:
        self.lost = error
        discard_output(self._stream)


def reopen_closed_standard_streams() -> None:
    """Point a standard descriptor that was closed (`>&-`) at /dev/null: otherwise the next file
    gentool opens takes its number, and what is printed lands in that file."""
    for descriptor, name in enumerate(("stdin", "stdout", "stderr")):
        try:
            os.fstat(descriptor)
        except OSError:
            devnull = os.open(os.devnull, os.O_RDWR)  # the lowest free number: this one
            if devnull != descriptor:
                os.dup2(devnull, descriptor)
                os.close(devnull)
        if getattr(sys, name) is None:  # how Python starts without the descriptor
            # The process's own stream, open until it ends, as the one Python would have made.
            stream = open(descriptor, "w" if descriptor else "r", closefd=False)  # noqa: SIM115
            setattr(sys, name, stream)


def discard_output(stream: IO[str]) -> None:
    """Send what `stream` still buffers, and whatever else writes there later (a plugin's print,
    the interpreter's flush at exit), to /dev/null, where it cannot fail again."""
    try:
        descriptor = stream.fileno()
    except (OSError, ValueError):  # not a stream of the process (a test's capture)
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, descriptor)
    os.close(devnull)
