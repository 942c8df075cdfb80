"""What a person watching training sees, and how they stop it.

A Rich progress bar per epoch on a terminal (one plain line per epoch otherwise), with the step
rate, the time left and the means of the logged values so far; and Ctrl-C or SIGTERM, which
ask training to finish its step and save.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from types import FrameType
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Column

from gentool.interrupts import interrupted
from gentool.terminal import counted, escaped


class StopRequest:
    """Set by a signal handler: the name of the signal that asked training to stop."""

    signal_name: str | None = None


@contextmanager
def stop_on_signals() -> Iterator[StopRequest]:
    """SIGINT and SIGTERM ask the loop to finish its step and save; a second SIGINT aborts."""
    request = StopRequest()
    if interrupted():  # a Ctrl-C at start-up that something swallowed still stops training
        request.signal_name = signal.SIGINT.name

    def request_stop(number: int, frame: FrameType | None) -> None:
        if request.signal_name and number == signal.SIGINT:
            raise KeyboardInterrupt
        request.signal_name = signal.Signals(number).name

    previous = {}
    try:
        for number in (signal.SIGINT, signal.SIGTERM):
            previous[number] = signal.signal(number, request_stop)
    except ValueError:  # not the main thread: signals stay with whoever owns them
        pass
    try:
        yield request
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


class TrainingDisplay:
    """The progress of one training invocation: steps as they run, values as they are logged."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress: Progress | None = None
        self.task: Any = None
        self.sums: dict[str, float] = {}
        self.logged = 0  # steps whose values have reached the CPU this epoch
        self.steps = 0  # steps run this epoch
        self.epoch_started = 0.0
        self.label = ""

    def __enter__(self) -> TrainingDisplay:
        if self.console.is_terminal:
            # Losses come last: on a narrow terminal they are cut, not the bar.
            self.progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(bar_width=24),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"),
                TimeRemainingColumn(),
                TextColumn(
                    "{task.fields[losses]}",
                    table_column=Column(ratio=1, no_wrap=True, overflow="ellipsis"),
                ),
                console=self.console,
                expand=True,
            )
            self.progress.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.progress is not None:
            self.progress.stop()

    def start_epoch(
        self, epoch: int, epochs: int, steps: int, done: int, phase: str | None = None
    ) -> None:
        self.sums, self.logged, self.steps = {}, 0, 0
        self.epoch_started = time.perf_counter()
        self.label = f"epoch {epoch + 1}/{epochs}" + (f" · {escaped(phase)}" if phase else "")
        if self.progress is not None:
            self.task = self.progress.add_task(
                self.label, total=steps, completed=done, losses="", rate=""
            )

    def advance(self) -> None:
        """One more step has run."""
        self.steps += 1
        if self.progress is not None:
            self.progress.update(self.task, advance=1, rate=f"{self._rate():.1f} it/s")

    def show_values(self, logged: Iterable[Mapping[str, float]]) -> None:
        """Steps' logged values, now on the CPU."""
        for values in logged:
            self.logged += 1
            for name, value in values.items():
                self.sums[name] = self.sums.get(name, 0.0) + value
        if self.progress is not None:
            self.progress.update(self.task, losses=self._means())

    def end_epoch(self) -> None:
        if self.progress is None:
            seconds = time.perf_counter() - self.epoch_started
            self.console.print(
                f"{self.label}: {self._means()}  ({counted(self.steps, 'step')}, "
                f"{self._rate():.1f} it/s, {seconds:.1f} s)",
                highlight=False,
            )

    def _means(self) -> str:
        return "  ".join(
            f"{escaped(name)} {total / max(self.logged, 1):.3g}"
            for name, total in self.sums.items()
        )

    def _rate(self) -> float:
        elapsed = time.perf_counter() - self.epoch_started
        return self.steps / elapsed if elapsed > 0 else 0.0
