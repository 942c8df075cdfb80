"""Loggers: where a training sends its logged values besides metrics.jsonl (TensorBoard, CSV, ...).

A logger is a plugin, found through the ``gentool.loggers`` entry point group, which the built-in
ones use too::

    [project.entry-points."gentool.loggers"]
    tensorboard = "gentool.loggers.tensorboard_logger:TensorBoardLogger"

The entry point names a callable, typically a class, that `gentool train --log NAME` calls once
the run folder exists as ``factory(run_dir, run)`` with the folder and a `RunInfo`; what it
returns is a `Logger`. The trainer calls it on its main process only:

- `Logger.scalars` with every step's values since the last call, at the logging interval
  (`--log-every`, each epoch's end, and a second after the last values: every step only when
  steps take longer than a second); and after an evaluation (`--eval-every`), with its metrics;
- `Logger.image` with each epoch's sample grid;
- `Logger.text` with the run's description (model, config, data, seed) when training starts;
- `Logger.close` when training ends, however it ends.

Importing this module imports neither torch nor numpy: a logger plugin needs neither.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from importlib import metadata
from typing import TYPE_CHECKING, Any, Protocol

from gentool.errors import GentoolError
from gentool.registry import entries_named, normalize_distribution

if TYPE_CHECKING:
    import numpy as np

LOGGER_GROUP = "gentool.loggers"


@dataclass(frozen=True)
class RunInfo:
    """The run a logger logs: what `factory(run_dir, run)` is told when training starts."""

    model: str  # the model's name, as `gentool list` shows it
    config: Mapping[str, Any]  # the model's config, as run.json holds it
    data: Mapping[str, Any]  # source, count, spec (channels, height, width, class_names), limit
    seed: int
    batch_size: int  # the global batch, whatever the number of processes
    epochs: int  # the epoch this training stops after (counted from 1)
    resumed: bool  # this training continues a run (--resume)
    # The global step training starts after: 0 for a new run, the checkpoint's step when
    # resumed. What a logger wrote for later steps came from a training that was stopped
    # before its next checkpoint: those steps are trained again, and their old values are stale.
    start_step: int

    def describe(self) -> dict[str, Any]:
        """What the run is, as JSON-ready values, leaving out where this training starts: a
        tracker's config for the run, and what `Logger.text` receives as "config"."""
        where = ("resumed", "start_step")
        return {key: value for key, value in asdict(self).items() if key not in where}


@dataclass(frozen=True)
class StepValues:
    """The numbers logged at one step: a training step's losses, or an evaluation's metrics."""

    step: int  # the global optimisation step, from 1; an evaluation has its epoch's last step
    epoch: int  # from 1
    values: Mapping[str, float]
    phase: str | None = None  # the training phase, for models trained in phases


class Logger(Protocol):
    """What a logger does with what a training logs. Every method is optional: one a logger
    lacks is not called (a table has no use for images). Each runs on the training thread
    between steps: return quickly, and hand slow work (a network upload) to a thread."""

    def scalars(self, steps: Sequence[StepValues]) -> None:
        """The values logged since the last call, in step order, one `StepValues` per step."""

    def image(self, step: int, name: str, pixels: np.ndarray) -> None:
        """An image logged at `step`: `pixels` is (height, width, channels) uint8, with 1 or 3
        channels. "samples" is the epoch's sample grid."""

    def text(self, step: int, name: str, text: str) -> None:
        """A text logged at `step`: "config" is `RunInfo.describe()` as JSON."""

    def close(self) -> None:
        """Training has ended: write out what is buffered and let go of files and connections."""


class LoggerUnavailable(GentoolError):
    """Raised by a logger's module at import when something it needs is not installed, with
    what to install: `gentool train --log` then stops before training, with that message."""


@dataclass(frozen=True)
class LoggerEntry:
    """One installed logger, read from its distribution's metadata (nothing imported)."""

    name: str
    distribution: str
    version: str
    entry_point: metadata.EntryPoint

    @property
    def qualified_name(self) -> str:
        return f"{self.distribution}:{self.name}"

    def origin(self) -> str:
        return f"logger {self.name!r} (from {self.distribution} {self.version})"


def installed_loggers() -> list[LoggerEntry]:
    """Every logger entry point visible to this interpreter, sorted by name then distribution.
    Only metadata is read: listing loggers imports none of them."""
    entries: dict[tuple[str, str], LoggerEntry] = {}
    for entry_point in metadata.entry_points(group=LOGGER_GROUP):
        distribution = entry_point.dist
        dist_name = normalize_distribution(distribution.name) if distribution else "unknown"
        version = distribution.version if distribution else "?"
        # A source checkout can expose the same distribution twice (egg-info beside dist-info).
        entries.setdefault(
            (dist_name, entry_point.name),
            LoggerEntry(entry_point.name, dist_name, version, entry_point),
        )
    return sorted(entries.values(), key=lambda entry: (entry.name, entry.distribution))


def find_logger(
    reference: str, entries: Sequence[LoggerEntry], *, given_as: str = "--log"
) -> LoggerEntry:
    """The installed logger "name" or "distribution:name", which `given_as` named; a
    GentoolError says why not."""
    name = reference.rpartition(":")[2]
    matches = entries_named(reference, entries)
    if not matches:
        names = sorted({entry.name for entry in entries})
        known = ", ".join(names) if names else "none are installed"
        raise GentoolError(
            f"unknown logger {reference!r} in {given_as}; installed loggers: {known}"
        )
    if len(matches) > 1:
        choices = " or ".join(entry.qualified_name for entry in matches)
        raise GentoolError(f"logger name {name!r} in {given_as} is ambiguous: use {choices}")
    return matches[0]


__all__ = [
    "LOGGER_GROUP",
    "Logger",
    "LoggerEntry",
    "LoggerUnavailable",
    "RunInfo",
    "StepValues",
    "find_logger",
    "installed_loggers",
]
