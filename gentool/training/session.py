"""Everything one training invocation holds, built once before its first step.

`open_session` builds the model where the run starts or resumes: seeded weights, optimizers,
batches, the restored state of a resumed run (weights, optimizers, random generators, the moving
average), the speed options, and the files and display it writes to.
"""

from __future__ import annotations

import copy
import dataclasses
import shlex
from collections.abc import Mapping
from contextlib import AbstractContextManager, ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from gentool import rng
from gentool.api import ModelPlugin, Phase
from gentool.checkpoint import RunFolder
from gentool.data import BatchLoader, ImageDataset
from gentool.errors import CheckpointError, ConfigError
from gentool.jsonl import JsonLinesWriter
from gentool.kernels import fused_blocks_running_plain
from gentool.label_accuracy import check_measurable
from gentool.loggers import RunInfo
from gentool.models import build_model, calling, plugin_for_config
from gentool.progress import progress_bars
from gentool.record import Progress, RunRecord
from gentool.run_files import EMA_FILE, checkpoint_name
from gentool.training.claim import RunClaim, StagedRun
from gentool.training.display import TrainingDisplay
from gentool.training.distributed import (
    Ranks,
    broadcast_from_main,
    main_value,
    rank_seed,
    shard_size,
)
from gentool.training.ema import ExponentialMovingAverage
from gentool.training.faults import check_finite, divergence_advice
from gentool.training.logbook import StepLog
from gentool.training.monitor import EpochMonitor, MonitorLogs
from gentool.training.request import TrainingPlan, eval_schedule
from gentool.training.setup import (
    RunStart,
    new_record,
    seed_of,
    start_new_run,
    start_resumed_run,
)
from gentool.training.speed import Acceleration, compile_networks, mixed_precision, prepare_model
from gentool.training.step import StepContext, optimizers_of, phases_of
from gentool.training.tracking import LoggerChoice, Trackers, warn


@dataclass
class Session:
    """One training invocation: its run, its model and what steps it."""

    plan: TrainingPlan
    run: RunFolder
    record: RunRecord
    dataset: ImageDataset
    model: torch.nn.Module
    context: StepContext
    phases: list[Phase]
    loader: BatchLoader
    autocast: AbstractContextManager[object]
    ema: ExponentialMovingAverage | None
    ranks: Ranks
    console: Console
    display: TrainingDisplay
    log: StepLog
    claim: RunClaim | None  # rank 0's hold on the run folder
    files: ExitStack  # the files held open while training writes them
    monitor: EpochMonitor | None = None  # rank 0's, once the run folder exists
    trackers: Trackers | None = None  # rank 0's, when --log chose loggers
    config: Any = None  # the model's config
    advice: str = ""  # what to try when training diverges
    steps: int = 0  # optimisation steps taken in this invocation
    last_grid: Path | None = field(default=None)

    @property
    def plugin(self) -> ModelPlugin:
        return self.plan.plugin

    @property
    def acceleration(self) -> Acceleration:
        return self.plan.acceleration

    @property
    def progress(self) -> Progress:
        return self.record.progress

    def check_finite(self, values: Mapping[str, float], epoch: int, step: int) -> None:
        """Stop on a non-finite logged value, saying what the run folder (as it is now) keeps."""
        check_finite(values, epoch, step, self.run, self.record, self.advice)

    def continuation(self) -> str:
        """How to go on from a stop that kept the run's last checkpoint."""
        if isinstance(self.run, StagedRun):
            return f"the run in {self.run.replaces} is as it was"
        committed = self.record.checkpoint == checkpoint_name(self.progress.global_step)
        if committed and self.progress.epoch >= self.record.training.epochs:
            return "its training is complete"  # a last save that failed left an epoch to train
        return f"once fixed, resume with: {self.resume_command}"

    @property
    def resume_command(self) -> str:
        processes = ["--nproc", str(self.ranks.world_size)] if self.ranks.distributed else []
        return shlex.join([
            "gentool", "train", self.plugin.name, "--resume", "--run-dir", str(self.run),
            "--epochs", str(self.record.training.epochs), *processes, *self.acceleration.flags(),
        ])  # fmt: skip


def open_session(
    plan: TrainingPlan, device: torch.device, ranks: Ranks, console: Console, files: ExitStack
) -> Session:
    """Start or resume the run `plan` asks for, up to its first step (or step 0's checkpoint,
    which `gentool.training.loop` writes)."""
    start_run = start_resumed_run if plan.request.resume else start_new_run
    with progress_bars(console if ranks.main else None, "files") as track:
        start = start_run(plan, files if ranks.main else None, track)
    plan = _for_data(plan, start)
    torch.manual_seed(seed_of(plan, start))  # before build, so initialisation follows the seed
    model = build_model(plan.plugin, start.config, start.dataset.spec, device)
    model = prepare_model(model, plan.acceleration)
    _check_fused_blocks(model, plan.acceleration)
    optimizers = optimizers_of(model, plan.plugin)
    phases = phases_of(model, plan.plugin)
    record = start.record or new_record(plan, start, phases, str(device))
    shard_size(record.training.batch_size, ranks)
    loader = BatchLoader(  # before the first save: data too small for a batch leaves no run
        start.dataset,
        record.training.batch_size,
        device=device,
        value_range=plan.plugin.value_range,
        seed=record.training.seed,
        rank=ranks.rank,
        world_size=ranks.world_size,
        augment=tuple(record.training.augment),
    )
    run = _agreed_run(start, ranks)
    if plan.request.resume:
        _check_progress(run, record, loader.steps_per_epoch)
        with calling(plan.plugin, "load_state_dict"):
            _restore(run, record, model, optimizers, ranks, console)
    elif ranks.distributed:  # one set of weights, but each process its own noise
        torch.manual_seed(rank_seed(record.training.seed, ranks.rank))
    if ranks.distributed:
        broadcast_from_main(model.state_dict().values())
    ema = _moving_average(model, run, record, resume=plan.request.resume)
    if plan.acceleration.compile:
        compile_networks(model)
    autocast, scaler = mixed_precision(device, plan.acceleration.amp)
    context = StepContext(optimizers, device, ranks=ranks, scaler=scaler)
    if not ranks.main:
        console = Console(quiet=True)
    display = TrainingDisplay(console)
    advice = divergence_advice(plan.plugin, start.config)
    log = StepLog(
        None,  # metrics.jsonl: opened once the run folder exists (open_run_logs)
        display,
        every=plan.request.log_every,
        ranks=ranks,
        device=device,
        plugin_name=plan.plugin.name,
    )
    session = Session(
        plan, run, record, start.dataset, model, context, phases, loader, autocast, ema, ranks,
        console, display, log, start.claim, files, config=start.config, advice=advice,
    )  # fmt: skip
    log.check = session.check_finite
    session.trackers = log.trackers = _trackers(start.loggers, record, plan, ranks, console, files)
    return session


def _for_config(plan: TrainingPlan, config: Any) -> TrainingPlan:
    """The plan with the capabilities of the run's config, and the evaluations they allow (a
    model that samples only in some configs is not measured by sampling in the others)."""
    plugin = plugin_for_config(plan.plugin, config)
    if plugin is plan.plugin or plan.eval_schedule is None:
        return dataclasses.replace(plan, plugin=plugin)
    return dataclasses.replace(
        plan, plugin=plugin, eval_schedule=eval_schedule(plan.request, plugin)
    )


def _for_data(plan: TrainingPlan, start: RunStart) -> TrainingPlan:
    """The plan for the run's config and data: `_for_config`'s, refusing now, not after the
    first evaluation's epochs, an --eval-metrics that the data rules out."""
    plan = _for_config(plan, start.config)
    schedule = plan.eval_schedule
    if schedule and schedule.settings.chosen and "labels" in schedule.settings.metrics:
        check_measurable(start.dataset.spec.class_names, plan.plugin.name, "--eval-metrics")
    return plan


def _check_fused_blocks(model: torch.nn.Module, acceleration: Acceleration) -> None:
    """--kernels triton is a promise that the fused kernels run: refuse a model whose fused
    blocks would run as their plain layers instead (replaced or reconfigured layers)."""
    if acceleration.kernels != "triton":
        return
    plain = fused_blocks_running_plain(model, compiled=acceleration.compile)
    if plain:
        shown = ", ".join(plain[:3]) + (f" and {len(plain) - 3} more" if len(plain) > 3 else "")
        raise ConfigError(
            f"--kernels triton cannot run the fused blocks {shown}: their layers were replaced "
            "or reconfigured, so they run as plain layers; drop --kernels triton"
        )


def _agreed_run(start: RunStart, ranks: Ranks) -> RunFolder:
    """The run folder: each process named one for a new run; rank 0's is the run's."""
    if ranks.distributed and start.record is None:
        return RunFolder(str(main_value(str(start.run.path))))
    return start.run


def _check_progress(run: RunFolder, record: RunRecord, steps_per_epoch: int) -> None:
    """A resume continues at the step run.json names, which must be one training can reach:
    within its epoch, and counted as training counts them on this data and batch size."""
    progress = record.progress
    reached = progress.epoch * steps_per_epoch + progress.step_in_epoch
    if progress.step_in_epoch > steps_per_epoch or progress.global_step != reached:
        raise CheckpointError(
            f"{run} is damaged: run.json's progress (epoch {progress.epoch}, step "
            f"{progress.step_in_epoch}, global step {progress.global_step}) is not one training "
            f"reaches at {steps_per_epoch} steps an epoch; was run.json edited by hand?"
        )


def _restore(
    run: RunFolder,
    record: RunRecord,
    model: torch.nn.Module,
    optimizers: dict[str, torch.optim.Optimizer],
    ranks: Ranks,
    console: Console,
) -> None:
    """A resumed run's weights, optimizer state and random generators, as the checkpoint left
    them. Each process's noise stream is exactly the saved one when the run had as many
    processes; otherwise (the sharding changed, so the old streams cannot apply) fresh per-rank
    seeds from (seed, rank, step) keep the resumed run reproducible."""
    run.load_model(record, model)
    run.load_optimizers(record, optimizers)
    states = record.rng.get("ranks")
    saved = len(states) if states is not None else 1
    if saved == ranks.world_size:
        rng.restore(states[ranks.rank] if states is not None else record.rng)
        return
    rng.restore(record.rng)
    torch.manual_seed(rank_seed(record.training.seed, ranks.rank, record.progress.global_step))
    if ranks.main:
        console.print(
            f"resuming a run of {saved} processes with {ranks.world_size}: weights, optimizers "
            "and the data order continue exactly; the noise is reseeded",
            style="dim",
            highlight=False,
        )


def _moving_average(
    model: torch.nn.Module, run: RunFolder, record: RunRecord, *, resume: bool
) -> ExponentialMovingAverage | None:
    decay = record.training.ema
    if decay is None:
        if resume and EMA_FILE in record.checkpoint_sha256:  # resuming would drop the average
            raise CheckpointError(
                f"{run.run_file} records no --ema, but its checkpoint {record.checkpoint} keeps "
                "a moving average of the weights: was training.ema edited by hand? put back the "
                "decay the run was trained with"
            )
        return None
    ema = ExponentialMovingAverage(model, decay)
    if resume:
        stored = run.load_ema(record)
        if stored is None:
            raise CheckpointError(f"{run} was trained with --ema but its checkpoint has no average")
        ema.load_state_dict(stored)
    return ema


def _trackers(
    choice: LoggerChoice,
    record: RunRecord,
    plan: TrainingPlan,
    ranks: Ranks,
    console: Console,
    files: ExitStack,
) -> Trackers | None:
    """The chosen loggers as one, on the main process, closed with the run's files; what failed
    to import said now."""
    if not ranks.main:
        return None
    for message in choice.failed:
        warn(console, message)
    if not choice.factories:
        return None
    run = RunInfo(
        model=record.plugin.name,
        config=copy.deepcopy(record.config),  # a logger's to keep: run.json's stays as it is
        data=asdict(record.data),
        seed=record.training.seed,
        batch_size=record.training.batch_size,
        epochs=record.training.epochs,
        resumed=plan.request.resume,
        start_step=record.progress.global_step,
    )
    trackers = Trackers(choice, run, console)
    files.callback(trackers.close)
    return trackers


def start_trackers(session: Session) -> None:
    """Start the loggers once the run folder is in place: a replacement (--overwrite) that has
    not taken the old run's place yet may still be dropped, and its folder with it."""
    if session.trackers is not None and not isinstance(session.run, StagedRun):
        session.trackers.start(session.run.path)


def open_run_logs(session: Session) -> None:
    """metrics.jsonl and epochs.jsonl held open (trimmed back to the checkpoint on resume), and
    the epoch monitor that writes with them; rank 0's alone, once the run folder exists."""
    if not session.ranks.main:
        return
    run, resume = session.run, session.plan.request.resume
    kept = session.record.progress.global_step if resume else None
    metrics = session.files.enter_context(JsonLinesWriter(run.metrics_file, keep_through_step=kept))
    epochs = session.files.enter_context(JsonLinesWriter(run.epochs_file, keep_through_step=kept))
    session.log.writer = metrics
    session.monitor = EpochMonitor(
        session.plugin,
        session.config,
        session.dataset,
        run,
        session.console,
        MonitorLogs(epochs=epochs, metrics=metrics, trackers=session.trackers),
        session.plan.eval_schedule,
        seed=session.record.training.seed,
    )
    start_trackers(session)
