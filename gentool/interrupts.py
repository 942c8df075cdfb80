"""Ctrl-C before training takes it over.

Some imports swallow the KeyboardInterrupt that Ctrl-C raises in them (numpy's, under torch) and
then fail later in unrelated ways, or not at all, so a Ctrl-C at start-up could end in a
traceback or be ignored while training ran to its end. gentool remembers that one arrived, so
that the command still ends as interrupted, and training stops at its first step.
"""

from __future__ import annotations

import signal
from types import FrameType

EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a command Ctrl-C ended
_received: list[int] = []  # the signal numbers noted, in order


def note_interrupts() -> None:
    """From now on, Ctrl-C is remembered as well as raised as KeyboardInterrupt (unless the
    process was started with it ignored, as a shell starts a background job)."""
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        return

    def interrupt(number: int, frame: FrameType | None) -> None:
        _received.append(number)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, interrupt)


def interrupted() -> bool:
    """Whether Ctrl-C arrived since `note_interrupts`."""
    return bool(_received)
