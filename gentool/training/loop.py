"""The training loop. Nothing in it knows any particular model.

    fit:          step 0's checkpoint, then for each epoch: train_epoch, end_epoch
    train_epoch:  a batch → the model's training step → the moving average → the step's logged
                  values kept on the device (gentool.training.logbook) → stop when asked
    end_epoch:    a checkpoint → the epoch's sample grid → the epoch monitor

Logged values, sample grids and evaluations also reach the loggers --log chose
(gentool.training.tracking), at the same moments as they reach the run folder.

A checkpoint is written after every epoch and when a signal stops training, so a run resumes
from where it was saved, exactly (`gentool.training.session` restores it).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch

from gentool import rng
from gentool.api import Batch
from gentool.checkpoint import RunFolder
from gentool.errors import CheckpointError, Interrupted, StepOverflow, TrainingError
from gentool.images import image_grid, save_png
from gentool.models import calling
from gentool.sampling import class_grid, draw_uint8
from gentool.training.display import StopRequest, stop_on_signals
from gentool.training.distributed import all_agree, broadcast_from_main, gather_to_all
from gentool.training.faults import check_finite_weights, kept, plugin_code
from gentool.training.logbook import LoggedStep
from gentool.training.session import Session, open_run_logs, start_trackers
from gentool.training.speed import compile_failures
from gentool.training.step import phase_at, train_step

SAMPLE_GRID_SIZE = 64  # images in each epoch's sample grid (8×8, or a row per class)


@dataclass
class TrainSummary:
    epochs_done: int
    steps: int  # optimisation steps taken in this invocation
    total_steps: int  # optimisation steps of the run, those of the commands it resumed included
    seconds: float
    images_per_second: float
    last_sample_grid: Path | None


def fit(session: Session) -> TrainSummary:
    """Train until the run's epochs are done, checkpointing after each; a summary."""
    started = time.perf_counter()
    if session.record.checkpoint is None:
        save_checkpoint(session, first=True)  # step 0: a resumable run from the start
    open_run_logs(session)
    with stop_on_signals() as stop, session.display, _storage_errors(session):
        _write_missing_grid(session)
        for epoch in range(session.progress.epoch, session.record.training.epochs):
            epoch_started = time.perf_counter()
            train_epoch(session, epoch, stop)
            end_epoch(session, epoch, epoch_started)
            if epoch + 1 < session.record.training.epochs and _stop_asked(session, stop):
                raise Interrupted(  # asked while the epoch ended: its checkpoint is saved
                    f"{stop.signal_name or 'a signal to another process'}: stopped after epoch "
                    f"{epoch + 1}, checkpoint saved; resume with: {session.resume_command}"
                )
    seconds = time.perf_counter() - started
    images = session.steps * session.record.training.batch_size
    return TrainSummary(
        epochs_done=session.progress.epoch,
        steps=session.steps,
        total_steps=session.progress.global_step,
        seconds=seconds,
        images_per_second=images / seconds if seconds > 0 else 0.0,
        last_sample_grid=session.last_grid,
    )


def train_epoch(session: Session, epoch: int, stop: StopRequest) -> None:
    """The rest of epoch `epoch` (from 0): from the step a resumed run stopped at."""
    progress, loader, context = session.progress, session.loader, session.context
    phase = phase_at(session.phases, epoch)
    context.enter_phase(phase)
    epochs = session.record.training.epochs
    session.display.start_epoch(
        epoch, epochs, loader.steps_per_epoch, progress.step_in_epoch, context.phase
    )
    for batch in loader.epoch(epoch, start_step=progress.step_in_epoch):
        context.epoch, context.global_step = epoch, progress.global_step
        logs = run_step(session, batch)
        progress.step_in_epoch += 1
        progress.global_step += 1
        session.steps += 1
        logged = LoggedStep(
            epoch, progress.step_in_epoch, progress.global_step, context.phase,
            tuple(logs), tuple(logs.values()),
        )  # fmt: skip
        last = progress.step_in_epoch == loader.steps_per_epoch
        flush = last or context.skipped_non_finite  # a skipped step stops training at once
        stopping = session.log.add(logged, flush=flush, stop_asked=stop.signal_name is not None)
        session.display.advance()
        if stopping:
            _stop(session, epoch, stop)


def run_step(session: Session, batch: Batch) -> dict[str, torch.Tensor]:
    """One optimisation step on `batch`, as training runs it; the values it logs."""
    model, acceleration = session.model, session.acceleration
    if acceleration.channels_last and batch.images.dim() == 4:
        batch.images = batch.images.contiguous(memory_format=torch.channels_last)
    try:
        with (
            plugin_code(session.record, "training_step", session.run),
            compile_failures(acceleration.compile, session.plugin.name),
            session.autocast,
        ):
            logs = train_step(model, batch, session.context, session.plugin)
    except StepOverflow as overflow:
        raise TrainingError(
            f"{overflow} at step {session.progress.global_step + 1}; training stopped and "
            f"{kept(session.run, session.record)}; {session.advice}"
        ) from None
    if session.context.scaler is not None:
        session.context.scaler.update()
    if session.ranks.distributed and (buffers := list(model.buffers())):
        broadcast_from_main(buffers)  # BatchNorm statistics: rank 0's, as DDP keeps them
    if session.ema is not None:
        session.ema.update(model)
    return logs


def end_epoch(session: Session, epoch: int, started: float) -> None:
    """After epoch `epoch` (from 0), which `started` at that perf_counter time: its checkpoint,
    its sample grid, then the monitor."""
    progress = session.progress
    progress.epoch, progress.step_in_epoch = epoch + 1, 0
    save_checkpoint(session)  # first: a plugin that fails to sample costs no training
    if session.plugin.capabilities.sample and session.ranks.main:
        with _sampling_weights(session):
            session.last_grid = write_epoch_grid(session, epoch + 1)
    session.display.end_epoch()
    if session.monitor is not None:  # measured on the weights that sample, as the grids are
        with _sampling_weights(session):
            session.monitor.end_epoch(
                session.model,
                progress.epoch,
                progress.global_step,
                time.perf_counter() - started,
                last=progress.epoch == session.record.training.epochs,
            )


def _write_missing_grid(session: Session) -> None:
    """A run stopped between an epoch's checkpoint and its sample grid resumes after that
    epoch: draw the grid it missed, from the same weights and seed as it would have been."""
    epoch, plugin = session.progress.epoch, session.plugin
    if (
        epoch == 0
        or session.progress.step_in_epoch != 0
        or not (plugin.capabilities.sample and session.ranks.main)
        or session.run.epoch_grid(epoch).exists()
    ):
        return
    with _sampling_weights(session):
        session.last_grid = write_epoch_grid(session, epoch)


def write_epoch_grid(session: Session, epoch: int) -> Path:
    """Samples from a fixed seed, so grids of successive epochs show the same latent points;
    conditional models draw one row per class. The loggers get the grid at the epoch's last
    step."""
    spec, plugin = session.dataset.spec, session.plugin
    labels, columns = None, math.ceil(math.sqrt(SAMPLE_GRID_SIZE))
    if plugin.capabilities.conditional:
        labels, columns = class_grid(spec.num_classes, SAMPLE_GRID_SIZE)
    count = SAMPLE_GRID_SIZE if labels is None else len(labels)
    with rng.preserved(), plugin_code(session.record, "sample", session.run):
        images = draw_uint8(
            session.model, plugin, spec, count, seed=session.record.training.seed, labels=labels
        )
    grid = image_grid(images, columns=columns)
    path = save_png(grid, session.run.epoch_grid(epoch))
    if session.trackers is not None:
        session.trackers.image(session.progress.global_step, "samples", grid)
    return path


def save_checkpoint(session: Session, *, first: bool = False) -> None:
    """Commit a checkpoint of the run as it is now (rank 0 writes it; every rank's generator
    state goes in it). The `first` checkpoint creates the run folder."""
    record, ranks = session.record, session.ranks
    states = gather_to_all(rng.capture(), ranks.world_size) if ranks.distributed else None
    if not ranks.main:
        return
    record.rng = rng.capture()
    if states is not None:
        record.rng["ranks"] = states
    average = session.ema.state_dict() if session.ema else None
    check_finite_weights(_saved_tensors(session), session.run, record, session.advice)

    def write(run: RunFolder) -> None:
        run.save(record, session.model, session.context.optimizers, ema=average)

    try:
        if first and session.claim is not None:
            session.run = session.claim.commit_first(write)
        else:
            write(session.run)
    except CheckpointError as error:  # the disk refused: say how to go on once it is fixed
        raise CheckpointError(f"{error}; {session.continuation()}") from None
    claim = session.claim
    if claim is not None and claim.staged is not None and record.progress.global_step > 0:
        session.run = claim.take_place()  # --overwrite: the new run has trained; it replaces
        if session.monitor is not None:
            session.monitor.run = session.run
        start_trackers(session)


def _saved_tensors(session: Session) -> dict[str, torch.Tensor]:
    """What a checkpoint holds: the weights, the optimizers' state and the moving average."""
    with calling(session.plugin, "state_dict"):  # a model may have its own
        tensors = dict(session.model.state_dict())
    parameter_names = {id(value): key for key, value in session.model.named_parameters()}
    for name, optimizer in session.context.optimizers.items():
        for parameter, state in optimizer.state.items():
            owner = parameter_names.get(id(parameter), "a parameter")
            for key, value in state.items():
                if isinstance(value, torch.Tensor):
                    tensors[f"{key} of {owner} in optimizer {name!r}"] = value
    if session.ema is not None:
        tensors |= {f"average of {key}": value for key, value in session.ema.state_dict().items()}
    return tensors


def _stop_asked(session: Session, stop: StopRequest) -> bool:
    """Whether any process was asked to stop (all agree, so that all stop together)."""
    asked = stop.signal_name is not None
    return not all_agree(not asked) if session.ranks.distributed else asked


def _stop(session: Session, epoch: int, stop: StopRequest) -> None:
    save_checkpoint(session)
    progress = session.progress
    raise Interrupted(
        f"{stop.signal_name or 'a signal to another process'}: stopped at epoch {epoch + 1}, "
        f"step {progress.step_in_epoch}/{session.loader.steps_per_epoch}, checkpoint saved; "
        f"resume with: {session.resume_command}"
    )


@contextmanager
def _storage_errors(session: Session) -> Iterator[None]:
    """A file that cannot be written beside the checkpoints (metrics, a sample grid, loss.png)
    stops training in one line; the last checkpoint is the run, and it says how to go on."""
    try:
        yield
    except OSError as error:
        where = f" {error.filename}" if error.filename else f" in {session.run}"
        raise TrainingError(
            f"could not write{where}: {error.strerror or error}; training stopped and "
            f"{kept(session.run, session.record)}; {session.continuation()}"
        ) from None


@contextmanager
def _sampling_weights(session: Session) -> Iterator[None]:
    """The moving average of the weights while sampling from a run that keeps one; and
    torch.compile's failures said in one line."""
    averaged = session.ema.applied_to(session.model) if session.ema else nullcontext()
    with compile_failures(session.acceleration.compile, session.plugin.name), averaged:
        yield
