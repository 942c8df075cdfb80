"""Progress bars for the long steps outside a training's own display: decoding a data set,
extracting features. Shown on a terminal only: elsewhere a bar is noise, and its last frame a
blank line."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from gentool.terminal import escaped

# (description, total) → advance(done): what a long step reports its progress to.
Tracker = Callable[[str, int], Callable[[int], None]]


class _RateColumn(ProgressColumn):
    """Items a second, once there is a measure of it."""

    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(
            "" if speed is None else f"{speed:,.0f} {self.unit}/s", style="progress.data.speed"
        )


@contextlib.contextmanager
def progress_bars(console: Console | None, unit: str) -> Iterator[Tracker | None]:
    """A tracker drawing one bar per step on `console`, or None where no bar is shown."""
    if console is None or not console.is_terminal:
        yield None
        return
    columns = (
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), _RateColumn(unit),
        TimeRemainingColumn(),
    )  # fmt: skip
    with Progress(*columns, console=console, transient=True) as progress:

        def track(description: str, total: int) -> Callable[[int], None]:
            task = progress.add_task(escaped(description), total=total)
            return lambda done: progress.advance(task, done)

        yield track
