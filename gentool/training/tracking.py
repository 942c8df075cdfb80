"""`--log`: the loggers (gentool.loggers) a training sends its values to, each kept apart from it.

Before training starts, --log's names are looked up and their modules imported: an unknown name,
or a logger that says what it needs installed (`LoggerUnavailable`), is a one-line error then.
Any other failure of a logger, at import, when it is created or in any of its methods, is one
warning line naming it and its distribution; the logger is left out from then on and training
goes on, as metrics.jsonl and the checkpoints never depend on a logger.
GENTOOL_STRICT_PLUGINS=1 raises instead, with the traceback.

Loggers are created once the run folder is in place: at the start of training, or, for a run
that replaces another (--overwrite), once the new run has taken the old one's place; what is
logged before then waits, and reaches them when they start.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from rich.console import Console

from gentool.errors import ConfigError, GentoolError, describe_exception
from gentool.loggers import (
    LoggerEntry,
    LoggerUnavailable,
    RunInfo,
    StepValues,
    find_logger,
    installed_loggers,
)
from gentool.registry import strict_plugins
from gentool.terminal import escaped

NO_LOGGERS = "none"  # --log none: log to no logger (on --resume: stop logging to the run's)


def parse_logger_names(log: str | Sequence[str]) -> tuple[str, ...]:
    """--log's names: separated by commas (a sequence, from Python), or "none"."""
    names = [name.strip() for name in (log.split(",") if isinstance(log, str) else log)]
    if names == [NO_LOGGERS]:
        return ()
    if not all(names) or NO_LOGGERS in names:
        raise ConfigError(
            f"--log takes logger names separated by commas, or {NO_LOGGERS}; got {log!r}"
        )
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ConfigError(f"--log names {', '.join(map(repr, repeated))} more than once")
    return tuple(names)


@dataclass(frozen=True)
class LoggerChoice:
    """The loggers a training logs to, their modules imported."""

    names: tuple[str, ...]  # as --log gave them, which run.json records
    factories: tuple[tuple[LoggerEntry, Callable[..., Any]], ...] = ()
    failed: tuple[str, ...] = ()  # a warning for each logger whose import failed


def load_loggers(names: Sequence[str], *, recorded: bool = False) -> LoggerChoice:
    """Import the loggers `names`: those --log gave, or those that run.json `recorded` for the
    run being resumed."""
    given_as = "run.json (this run's loggers: choose others with --log)" if recorded else "--log"
    entries = installed_loggers()
    chosen = [find_logger(name, entries, given_as=given_as) for name in names]
    factories, failed = [], []
    for entry in chosen:
        try:
            factories.append((entry, entry.entry_point.load()))
        except LoggerUnavailable as error:
            raise GentoolError(f"{entry.name} in {given_as}: {error}") from None
        except (Exception, SystemExit) as error:  # its own fault: the run goes on without it
            if strict_plugins():
                raise
            failed.append(
                f"{entry.origin()} failed to import ({describe_exception(error)}); training "
                "goes on without it"
            )
    return LoggerChoice(tuple(names), tuple(factories), tuple(failed))


@dataclass
class Trackers:
    """The loggers of one training on its main process, as one: each call reaches every logger
    still in, and a logger that raises is said once and left out."""

    choice: LoggerChoice
    run: RunInfo
    console: Console
    loggers: list[tuple[LoggerEntry, Any]] = field(default_factory=list)
    # Calls made before the loggers start, given to them when they do; None once started.
    waiting: list[tuple[str, tuple[Any, ...]]] | None = field(default_factory=list)
    thread_hook: Callable[[threading.ExceptHookArgs], Any] | None = None

    def start(self, run_dir: Path) -> None:
        """Create the loggers in `run_dir`, the run folder in its place; then the run's
        description and what was logged meanwhile reach them."""
        # A logger's own thread (TensorBoard's writer) that fails is said in one line too, not
        # as the traceback Python prints for a thread by default.
        self.thread_hook = threading.excepthook
        threading.excepthook = self._thread_failed
        for entry, factory in self.choice.factories:
            try:
                self.loggers.append((entry, factory(run_dir, self.run)))
            except (Exception, SystemExit) as error:
                if strict_plugins():
                    raise
                self._warn(
                    f"{entry.origin()} could not start ({describe_exception(error)}); training "
                    "goes on without it"
                )
        waiting, self.waiting = self.waiting or [], None
        description = json.dumps(self.run.describe(), indent=2)
        self.text(self.run.start_step, "config", description)
        for method, arguments in waiting:
            self._call(method, *arguments)

    def scalars(self, steps: Sequence[StepValues]) -> None:
        if steps:
            self._call("scalars", steps)

    def evaluation(self, step: int, epoch: int, values: Mapping[str, Any]) -> None:
        """An evaluation's metrics after `epoch`, at its last `step`; its settings (the number
        of images, the features), which are no measurements, stay in metrics.jsonl."""
        numbers = {name: value for name, value in values.items() if isinstance(value, float)}
        self.scalars([StepValues(step, epoch, numbers)])

    def image(self, step: int, name: str, pixels: Any) -> None:
        self._call("image", step, name, pixels)

    def text(self, step: int, name: str, text: str) -> None:
        self._call("text", step, name, text)

    def close(self) -> None:
        loggers, self.loggers = self.loggers, []
        for entry, logger in loggers:
            self._call_one(entry, logger, "close", ())
        if self.thread_hook is not None:
            threading.excepthook, self.thread_hook = self.thread_hook, None

    def _thread_failed(self, failure: threading.ExceptHookArgs) -> None:
        if failure.exc_type is SystemExit:
            return
        self._warn(
            f"a logger's thread ({failure.thread.name if failure.thread else 'unnamed'}) raised "
            f"{describe_exception(failure.exc_value or failure.exc_type())}; what it had not "
            "written is lost, and training goes on"
        )

    def _call(self, method: str, *arguments: Any) -> None:
        if self.waiting is not None:
            self.waiting.append((method, arguments))
            return
        for entry, logger in list(self.loggers):
            if not self._call_one(entry, logger, method, _own_copies(arguments)):
                self.loggers.remove((entry, logger))
                with contextlib.suppress(Exception):  # said once already; let it flush what it can
                    getattr(logger, "close", lambda: None)()

    def _call_one(
        self, entry: LoggerEntry, logger: Any, method: str, arguments: tuple[Any, ...]
    ) -> bool:
        """Call `logger.method(*arguments)` where it has that method; whether it did not raise."""
        try:
            function = getattr(logger, method, None)
            if function is not None:
                function(*arguments)
            return True
        except (Exception, SystemExit) as error:
            if strict_plugins():
                raise
            self._warn(
                f"{entry.origin()} raised {describe_exception(error)} in {method}; training "
                "goes on without it (metrics.jsonl and the checkpoints are unaffected)"
            )
            return False

    def _warn(self, message: str) -> None:
        warn(self.console, message)


def _own_copies(arguments: tuple[Any, ...]) -> tuple[Any, ...]:
    """What one logger is given, its own: a logger that changes the values or pixels it
    receives changes nothing another logger receives."""
    copies: list[Any] = []
    for argument in arguments:
        if isinstance(argument, Sequence) and not isinstance(argument, str):
            argument = tuple(
                replace(step, values=MappingProxyType(dict(step.values))) for step in argument
            )
        elif hasattr(argument, "copy") and hasattr(argument, "flags"):  # a NumPy image
            argument = argument.copy()
            argument.flags.writeable = False
        copies.append(argument)
    return tuple(copies)


def warn(console: Console, message: str) -> None:
    """One warning line about a logger, whose own words are printed literally."""
    console.print(f"[yellow]warning:[/] {escaped(message)}", highlight=False)
