"""What the trainer does at the end of each epoch besides checkpointing: watch the run.

- a line in epochs.jsonl: the epoch's wall time and, for models that sample and when the run is
  watched (below), the diversity of the epoch's sample grid (mean pairwise distance of builtin
  features); metrics.jsonl keeps one line per step, and timings would make runs that resume
  differ from runs that did not;
- with `--eval-every N`, the chosen metrics every N epochs, on a few hundred images, in
  metrics.jsonl with the losses;
- watching: loss.png redrawn from both, and the health rules (gentool.health) checked, each
  warning printed once. Drawing and reading the history cost about a second, so the run is
  watched after the last epoch and otherwise at most every REDRAW_SECONDS, and never more often
  than keeps watching under WATCH_SHARE of the time: a run of quick epochs must not spend its
  time watching.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch
from rich.console import Console

from gentool import rng
from gentool.api import ModelPlugin
from gentool.data import ImageDataset
from gentool.evaluate import EvalSettings, measure
from gentool.features import load_extractor
from gentool.health import check_health
from gentool.jsonl import JsonLinesWriter
from gentool.metrics import mean_pairwise_distance
from gentool.models import image_size_of
from gentool.plots import read_history, write_loss_plot
from gentool.run_files import RunFiles
from gentool.sampling import draw_uint8
from gentool.terminal import escaped
from gentool.training.tracking import Trackers

DIVERSITY_SAMPLES = 64  # generated (and real) images whose feature spread is logged each epoch
TRAINING_EVAL_IMAGES = 500  # per `train --eval-every` evaluation: cheap, a rough number
REDRAW_SECONDS = 30.0  # least time between two redraws of loss.png (and health checks)
WATCH_SHARE = 0.02  # most of the training time that redrawing and health checks may take


@dataclass(frozen=True)
class EvalSchedule:
    """`train --eval-every`: measure `settings` every `every` epochs."""

    every: int
    settings: EvalSettings


@dataclass(frozen=True)
class MonitorLogs:
    """The files the monitor writes to, which the trainer holds open."""

    epochs: JsonLinesWriter  # epochs.jsonl
    metrics: JsonLinesWriter  # metrics.jsonl, for evaluations
    trackers: Trackers | None = None  # --log's loggers, for evaluations


class EpochMonitor:
    """Everything the trainer does after an epoch's checkpoint, for one training invocation."""

    def __init__(
        self,
        plugin: ModelPlugin,
        config: Any,
        dataset: ImageDataset,
        run: RunFiles,
        console: Console,
        logs: MonitorLogs,
        schedule: EvalSchedule | None = None,
        *,
        seed: int = 0,
    ) -> None:
        self.logs = logs
        self.plugin = plugin
        self.config = config
        self.dataset = dataset
        self.run = run
        self.console = console
        self.schedule = schedule
        self.seed = seed
        self.warned: set[str] = set()
        self.watched_at = time.perf_counter()  # when loss.png was last drawn, or training began
        self.watch_seconds = 0.0  # how long the last watch took
        self.extractor = None
        self.real_diversity: float | None = None

    def end_epoch(
        self, model: torch.nn.Module, epoch: int, step: int, seconds: float, *, last: bool
    ) -> None:
        """After epoch `epoch` (from 1) and its checkpoint at `step`; `last` for the last epoch
        of this invocation.

        Whatever runs here leaves torch's random state as it found it: the checkpoint already
        holds that state, and a resumed run must go on exactly as an uninterrupted one.
        """
        with rng.preserved():
            self._end_epoch(model, epoch, step, seconds, last)

    def _end_epoch(
        self, model: torch.nn.Module, epoch: int, step: int, seconds: float, last: bool
    ) -> None:
        since = time.perf_counter() - self.watched_at
        watch = last or since >= max(REDRAW_SECONDS, self.watch_seconds / WATCH_SHARE)
        line: dict[str, Any] = {"epoch": epoch, "step": step, "event": "epoch", "seconds": seconds}
        if watch and self.plugin.capabilities.sample:
            line.update(self._grid_diversity(model))
        self.logs.epochs.write([line])
        if self.schedule is not None and epoch % self.schedule.every == 0:
            self._evaluate(model, epoch, step)
        if watch:
            self._watch()

    def _watch(self) -> None:
        """Redraw loss.png and print the health warnings not printed yet."""
        started = time.perf_counter()
        write_loss_plot(self.run, title=f"{self.plugin.name} · {self.run}")
        for warning in check_health(read_history(self.run)):
            if warning.code not in self.warned:
                self.warned.add(warning.code)
                self.console.print(f"[yellow]warning:[/] {escaped(warning)}", highlight=False)
        self.watched_at = time.perf_counter()
        self.watch_seconds = self.watched_at - started

    def _grid_diversity(self, model: torch.nn.Module) -> dict[str, float]:
        device = next(model.parameters()).device
        if self.extractor is None:
            self.extractor = load_extractor("builtin", device)
            real = self.dataset.images[:DIVERSITY_SAMPLES]
            self.real_diversity = mean_pairwise_distance(self.extractor(real, device))
        images = draw_uint8(
            model, self.plugin, self.dataset.spec, DIVERSITY_SAMPLES, seed=self.seed
        )
        diversity = mean_pairwise_distance(self.extractor(images, device))
        return {"diversity": diversity, "diversity_real": self.real_diversity}

    def _evaluate(self, model: torch.nn.Module, epoch: int, step: int) -> None:
        assert self.schedule is not None
        measurement = measure(
            model,
            self.plugin,
            self.dataset.spec,
            source=self.dataset.source,
            image_size=image_size_of(self.config),
            settings=self.schedule.settings,
            held_out_from=len(self.dataset),
        )
        values = {"epoch": epoch, "step": step, "event": "eval", **measurement.values}
        self.logs.metrics.write([values])
        if self.logs.trackers is not None:
            self.logs.trackers.evaluation(step, epoch, measurement.values)
        shown = "  ".join(
            f"{key} {value:.4g}"
            for key, value in measurement.values.items()
            if isinstance(value, float)
        )
        self.console.print(f"eval after epoch {epoch}: {shown}", highlight=False)
