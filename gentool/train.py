"""The training loop. Nothing in this file knows any particular model.

It owns what every model shares: seeding, the device, batches, the optimisation step in automatic
mode, the progress display, metrics, sample grids, checkpoints, exact resume, Ctrl-C and non-finite
losses. A model brings its own math through the plugin API (`gentool.api.GenerativeModel`).
"""

from __future__ import annotations

import json
import math
import shlex
import signal
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Column

from gentool.api import Batch, ModelPlugin, Phase
from gentool.atomic import write_text
from gentool.checkpoint import RunFolder, RunRecord, latest_run, new_run_folder
from gentool.config import config_to_dict
from gentool.data import BatchLoader, ImageDataset, load_dataset, to_uint8
from gentool.errors import DataError, GentoolError, Interrupted, PluginError, TrainingError
from gentool.images import save_grid
from gentool.kernels.dispatch import check_requested_backend
from gentool.models import build_model, spec_to_dict
from gentool.monitor import EpochMonitor, EvalSchedule
from gentool.plots import EPOCHS_FILE
from gentool.registry import PluginEntry

SAMPLE_GRID_SIZE = 64  # images in each epoch's sample grid (8×8)
DEFAULT_EPOCHS = 5
DEFAULT_SEED = 0


@dataclass(frozen=True)
class TrainRequest:
    """What `gentool train` was asked; None means "the default" (or, on resume, "the run's")."""

    entry: PluginEntry
    config_values: Mapping[str, Any]
    data: str | None = None
    limit: int | None = None
    epochs: int | None = None
    batch_size: int | None = None
    seed: int | None = None
    device: str = "auto"
    run_dir: Path | None = None
    resume: bool = False
    eval_schedule: EvalSchedule | None = None  # --eval-every: metrics during training


@dataclass
class TrainSummary:
    epochs_done: int
    steps: int  # optimisation steps taken in this invocation
    seconds: float
    images_per_second: float
    last_sample_grid: Path | None


class StepContext:
    """The `gentool.api.TrainContext` handed to `training_step`."""

    def __init__(self, optimizers: Mapping[str, torch.optim.Optimizer], device: torch.device):
        self.optimizers = optimizers
        self.device = device
        self.epoch = 0
        self.global_step = 0
        self.phase: str | None = None
        self.phase_optimizer: str | None = None  # automatic mode: the optimizer of the phase

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def step(self, name: str) -> None:
        self.optimizers[name].step()


def run_training(request: TrainRequest, console: Console) -> tuple[TrainSummary, RunFolder]:
    """Start a new run or resume one, train it, and say where it is."""
    plugin = request.entry.plugin
    assert plugin is not None  # the registry resolves loaded plugins only
    device = resolve_device(request.device)
    check_requested_backend(device)
    if request.resume:
        run, record, config, dataset = _resumed_run(request, plugin)
    else:
        run, record, config, dataset = _new_run(request, plugin, device)
    summary = fit(
        plugin,
        config,
        dataset,
        run,
        record,
        epochs=record.training["epochs"],
        device=device,
        resume=request.resume,
        console=console,
        eval_schedule=request.eval_schedule,
    )
    return summary, run


def _new_run(
    request: TrainRequest, plugin: ModelPlugin, device: torch.device
) -> tuple[RunFolder, RunRecord, Any, ImageDataset]:
    config = plugin.parse_config(request.config_values)
    run = _fresh_run_folder(request.run_dir, plugin.name)
    dataset = load_dataset(
        request.data,
        image_size=getattr(config, "image_size", None),
        needs_labels=plugin.capabilities.conditional,
        limit=request.limit,
    )
    record = RunRecord(
        plugin={
            "name": plugin.name,
            "distribution": request.entry.distribution,
            "version": request.entry.version,
            "api_version": plugin.api_version,
        },
        config=config_to_dict(config),
        data={
            "source": dataset.source,
            "limit": request.limit,
            "count": len(dataset),
            "fingerprint": dataset.fingerprint,
            "spec": spec_to_dict(dataset.spec),
        },
        training={
            "seed": DEFAULT_SEED if request.seed is None else request.seed,
            "batch_size": request.batch_size or plugin.default_batch_size,
            "epochs": request.epochs,  # None: settled by fit() once the model's phases are known
            "device": str(device),
        },
    )
    return run, record, config, dataset


def _resumed_run(
    request: TrainRequest, plugin: ModelPlugin
) -> tuple[RunFolder, RunRecord, Any, ImageDataset]:
    run = RunFolder(request.run_dir) if request.run_dir else latest_run(plugin.name)
    record = run.read(expected_plugin=plugin.name)
    config = plugin.parse_config(record.config)
    epochs = request.epochs or record.training["epochs"]
    if epochs <= record.progress.epoch:
        raise GentoolError(
            f"{run} has already trained {record.progress.epoch} epochs: "
            f"pass --epochs N with N > {record.progress.epoch} to train further"
        )
    record.training["epochs"] = epochs
    source = request.data or record.data["source"]
    dataset = load_dataset(
        source,
        image_size=getattr(config, "image_size", None),
        needs_labels=plugin.capabilities.conditional,
        limit=record.data.get("limit"),
    )
    if dataset.fingerprint != record.data.get("fingerprint"):
        raise DataError(
            f"the data at {source!r} differs from what {run} was trained on; "
            "an exact resume needs the same data"
        )
    return run, record, config, dataset


def _fresh_run_folder(run_dir: Path | None, model_name: str) -> RunFolder:
    if run_dir is None:
        return new_run_folder(model_name)
    run = RunFolder(run_dir)
    if run.exists():
        raise GentoolError(
            f"{run_dir} already holds a run: continue it with --resume or choose another --run-dir"
        )
    if run_dir.exists() and any(run_dir.iterdir()):
        raise GentoolError(f"--run-dir {run_dir} is not empty: choose a new or empty folder")
    return run


def resolve_device(name: str) -> torch.device:
    """ "auto" → the first CUDA device when there is one, else the CPU; other names as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise GentoolError(f"unknown --device {name!r}: use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise GentoolError(f"--device {name} asked for CUDA, but no CUDA device is available")
    return device


def fit(
    plugin: ModelPlugin,
    config: object,
    dataset: ImageDataset,
    run: RunFolder,
    record: RunRecord,
    *,
    epochs: int | None,
    device: torch.device,
    resume: bool,
    console: Console,
    eval_schedule: EvalSchedule | None = None,
) -> TrainSummary:
    """Train until `epochs` epochs are done, checkpointing after each, and return a summary.

    `epochs` None means all of the model's phases, or DEFAULT_EPOCHS for a model without any.
    """
    seed = record.training["seed"]
    batch_size = record.training["batch_size"]
    torch.manual_seed(seed)  # before build, so weight initialisation follows the seed
    model = build_model(plugin, config, dataset.spec, device)
    optimizers = optimizers_of(model, plugin)
    phases = phases_of(model, plugin)
    if epochs is None:  # a new run without --epochs: all of its phases, or the default
        epochs = sum(phase.epochs for phase in phases) if phases else DEFAULT_EPOCHS
        record.training["epochs"] = epochs
    if resume:
        run.load_model(record, model)
        run.load_training_state(record, optimizers)
    else:
        run.save(record, model, optimizers)  # step 0: the folder is a resumable run from the start
    loader = BatchLoader(
        dataset, batch_size, device=device, value_range=plugin.value_range, seed=seed
    )
    progress = record.progress
    metrics = MetricsLog(run.metrics_file, keep_through_step=progress.global_step)
    context = StepContext(optimizers, device)
    manual = bool(getattr(model, "manual_optimization", False))
    steps = 0
    started = time.perf_counter()
    last_grid = None
    epoch_log = MetricsLog(run.path / EPOCHS_FILE, keep_through_step=progress.global_step)
    monitor = EpochMonitor(
        plugin, config, dataset, run, console, epoch_log, eval_schedule, seed=seed
    )
    with _stop_on_signals() as stop, TrainingDisplay(console) as display:
        for epoch in range(progress.epoch, epochs):
            phase = phase_at(phases, epoch)
            context.phase = phase.name if phase else None
            context.phase_optimizer = phase.optimizer if phase else None
            display.start_epoch(
                epoch, epochs, loader.steps_per_epoch, progress.step_in_epoch, context.phase
            )
            epoch_started = time.perf_counter()
            for batch in loader.epoch(epoch, start_step=progress.step_in_epoch):
                context.epoch, context.global_step = epoch, progress.global_step
                logs = train_step(model, batch, context, optimizers, manual, plugin)
                _check_finite(logs, epoch, progress.step_in_epoch, run, record)
                progress.step_in_epoch += 1
                progress.global_step += 1
                steps += 1
                phase_field = {"phase": context.phase} if context.phase else {}
                metrics.append(
                    {"epoch": epoch + 1, "step": progress.global_step, **phase_field, **logs}
                )
                display.advance(logs)
                if stop.signal_name:
                    run.save(record, model, optimizers)
                    raise Interrupted(
                        f"{stop.signal_name}: stopped at epoch {epoch + 1}, step "
                        f"{progress.step_in_epoch}/{loader.steps_per_epoch}, checkpoint saved; "
                        f"resume with: gentool train {plugin.name} --resume --run-dir "
                        f"{shlex.quote(str(run))} --epochs {epochs}"
                    )
            progress.epoch, progress.step_in_epoch = epoch + 1, 0
            if plugin.capabilities.sample:
                last_grid = write_sample_grid(
                    model, plugin, run.samples_dir / f"epoch_{epoch + 1:04d}.png", seed=seed
                )
            run.save(record, model, optimizers)
            display.end_epoch()
            monitor.end_epoch(
                model,
                progress.epoch,
                progress.global_step,
                time.perf_counter() - epoch_started,
                last=progress.epoch == epochs,
            )
    seconds = time.perf_counter() - started
    return TrainSummary(
        epochs_done=progress.epoch,
        steps=steps,
        seconds=seconds,
        images_per_second=steps * batch_size / seconds if seconds > 0 else 0.0,
        last_sample_grid=last_grid,
    )


def write_sample_grid(
    model: torch.nn.Module, plugin: ModelPlugin, path: Path, *, seed: int
) -> Path:
    """Samples from a fixed seed, so grids of successive epochs show the same latent points."""
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            images = model.sample(SAMPLE_GRID_SIZE, generator=generator)
    finally:
        model.train(was_training)
    return save_grid(to_uint8(images, plugin.value_range), path)


class MetricsLog:
    """metrics.jsonl: one JSON line per step; on resume, lines past the checkpoint are dropped."""

    def __init__(self, path: Path, *, keep_through_step: int) -> None:
        self.path = path
        if path.exists():
            kept = []
            for line in path.read_text(encoding="utf-8").splitlines():
                step = _step_of(line)
                if step is not None and step <= keep_through_step:
                    kept.append(line + "\n")
            write_text(path, "".join(kept))

    def append(self, values: Mapping[str, float]) -> None:
        with self.path.open("a", encoding="utf-8") as file:
            file.write(json.dumps(dict(values)) + "\n")


def _step_of(line: str) -> int | None:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return None  # a line torn by a crash mid-write


def optimizers_of(model: torch.nn.Module, plugin: ModelPlugin) -> dict[str, torch.optim.Optimizer]:
    optimizers = model.configure_optimizers()
    if (
        not isinstance(optimizers, Mapping)
        or not optimizers
        or not all(
            isinstance(optimizer, torch.optim.Optimizer) for optimizer in optimizers.values()
        )
    ):
        raise PluginError(
            f"{plugin.name}: configure_optimizers must return a non-empty dict of optimizers"
        )
    manual = bool(getattr(model, "manual_optimization", False))
    phases = phases_of(model, plugin)
    if not manual and phases and len(optimizers) > 1:
        unnamed = [phase.name for phase in phases if phase.optimizer not in optimizers]
        if unnamed:
            raise PluginError(
                f"{plugin.name}: phase {unnamed[0]!r} must name one of the optimizers "
                f"{', '.join(optimizers)}"
            )
    elif not manual and len(optimizers) != 1:
        raise PluginError(
            f"{plugin.name}: automatic optimisation takes one optimizer, got {len(optimizers)}; "
            "name one per phase, or set manual_optimization = True to step several"
        )
    return dict(optimizers)


def phases_of(model: torch.nn.Module, plugin: ModelPlugin) -> list[Phase]:
    """The model's training phases, or [] when it trains in one stage."""
    define = getattr(model, "phases", None)
    if define is None:
        return []
    phases = list(define())
    if not phases or not all(isinstance(phase, Phase) and phase.epochs >= 1 for phase in phases):
        raise PluginError(f"{plugin.name}: phases() must return Phase objects of 1 epoch or more")
    return phases


def phase_at(phases: list[Phase], epoch: int) -> Phase | None:
    """The phase that epoch `epoch` (from 0) belongs to; epochs past the end extend the last."""
    end = 0
    for phase in phases:
        end += phase.epochs
        if epoch < end:
            return phase
    return phases[-1] if phases else None


def train_step(
    model: torch.nn.Module,
    batch: Batch,
    context: StepContext,
    optimizers: Mapping[str, torch.optim.Optimizer],
    manual: bool,
    plugin: ModelPlugin,
) -> dict[str, float]:
    model.train()
    if manual:
        outputs = model.training_step(batch, context)
    else:
        name = context.phase_optimizer or next(iter(optimizers))
        optimizer = optimizers[name]
        optimizer.zero_grad(set_to_none=True)
        outputs = model.training_step(batch, context)
        if "loss" not in outputs:
            raise PluginError(f"{plugin.name}: training_step returned no 'loss' to optimise")
        loss = outputs["loss"]
        if torch.isfinite(loss):  # a non-finite loss must not reach the weights
            context.backward(loss)
            context.step(name)
    return {name: float(torch.as_tensor(value).detach()) for name, value in outputs.items()}


def _check_finite(
    logs: Mapping[str, float], epoch: int, step: int, run: RunFolder, record: RunRecord
) -> None:
    bad = {name: value for name, value in logs.items() if not math.isfinite(value)}
    if not bad:
        return
    values = ", ".join(f"{name}={value}" for name, value in bad.items())
    kept = (
        f"the last checkpoint in {run} is kept"
        if record.checkpoint
        else f"no checkpoint had been written yet in {run}"
    )
    raise TrainingError(
        f"non-finite values at epoch {epoch + 1}, step {step + 1} ({values}); training stopped "
        f"and {kept}; try a lower learning rate"
    )


class _StopFlag:
    signal_name: str | None = None


@contextmanager
def _stop_on_signals() -> Iterator[_StopFlag]:
    """SIGINT and SIGTERM ask the loop to finish its step and save; a second SIGINT aborts."""
    flag = _StopFlag()

    def request_stop(number: int, frame: FrameType | None) -> None:
        if flag.signal_name and number == signal.SIGINT:
            raise KeyboardInterrupt
        flag.signal_name = signal.Signals(number).name

    previous = {}
    try:
        for number in (signal.SIGINT, signal.SIGTERM):
            previous[number] = signal.signal(number, request_stop)
    except ValueError:  # not the main thread: signals stay with whoever owns them
        pass
    try:
        yield flag
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


class TrainingDisplay:
    """A Rich progress bar per epoch on a terminal; one plain line per epoch otherwise."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress: Progress | None = None
        self.task = None
        self.sums: dict[str, float] = {}
        self.count = 0
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
        self.sums, self.count = {}, 0
        self.epoch_started = time.perf_counter()
        self.label = f"epoch {epoch + 1}/{epochs}" + (f" · {phase}" if phase else "")
        if self.progress is not None:
            self.task = self.progress.add_task(
                self.label, total=steps, completed=done, losses="", rate=""
            )

    def advance(self, logs: Mapping[str, float]) -> None:
        for name, value in logs.items():
            self.sums[name] = self.sums.get(name, 0.0) + value
        self.count += 1
        if self.progress is not None:
            self.progress.update(
                self.task, advance=1, losses=self._means(), rate=f"{self._rate():.1f} it/s"
            )

    def end_epoch(self) -> None:
        if self.progress is None:
            seconds = time.perf_counter() - self.epoch_started
            self.console.print(
                f"{self.label}: {self._means()}  ({self.count} steps, {self._rate():.1f} it/s, "
                f"{seconds:.1f} s)",
                highlight=False,
            )

    def _means(self) -> str:
        return "  ".join(
            f"{name} {total / max(self.count, 1):.3g}" for name, total in self.sums.items()
        )

    def _rate(self) -> float:
        elapsed = time.perf_counter() - self.epoch_started
        return self.count / elapsed if elapsed > 0 else 0.0
