"""The training loop. Nothing in this file knows any particular model.

It owns what every model shares: seeding, the device, batches, the optimisation step in automatic
mode, the progress display, metrics, sample grids, checkpoints, exact resume, Ctrl-C and non-finite
losses; and how steps run: processes under torchrun (`gentool.distributed`), mixed precision,
torch.compile, channels-last, and a moving average of the weights (`gentool.ema`). A model brings
its own math through the plugin API (`gentool.api.GenerativeModel`).
"""

from __future__ import annotations

import json
import math
import shlex
import signal
import time
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
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
from gentool.checkpoint import (
    RunFolder,
    RunRecord,
    latest_run,
    new_run_folder,
    rng_state,
    set_rng_state,
)
from gentool.config import config_to_dict
from gentool.data import BatchLoader, ImageDataset, load_dataset, to_uint8
from gentool.distributed import (
    Ranks,
    all_agree,
    average_gradients,
    broadcast_from_main,
    gather_to_all,
    join_group,
    leave_group,
    main_value,
    mean_over_ranks,
    rank_seed,
    ranks_from_environment,
    shard_size,
)
from gentool.ema import ExponentialMovingAverage, check_decay
from gentool.errors import (
    CheckpointError,
    DataError,
    GentoolError,
    Interrupted,
    PluginError,
    TrainingError,
)
from gentool.images import save_grid
from gentool.kernels.dispatch import check_requested_backend
from gentool.models import build_model, spec_to_dict
from gentool.monitor import EpochMonitor, EvalSchedule
from gentool.plots import EPOCHS_FILE
from gentool.registry import PluginEntry, describe_exception, strict_plugins

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
    acceleration: Acceleration | None = None  # None: plain float32 eager steps
    ema: float | None = None  # decay of a moving average of the weights; on resume, the run's
    overwrite: bool = False  # replace the run in run_dir; never anything that is not a run
    eval_schedule: EvalSchedule | None = None  # --eval-every: metrics during training


@dataclass(frozen=True)
class Acceleration:
    """How the steps are computed. None of it changes what a checkpoint holds, so a run may be
    resumed with other choices."""

    amp: bool = False  # autocast to bfloat16 (float16 and a gradient scaler where it is missing)
    compile: bool = False  # torch.compile each of the model's top-level networks
    channels_last: bool = False  # NHWC weights and batches, which convolutions often prefer
    sync_bn: bool = False  # BatchNorm statistics over the whole global batch (CUDA only)


@dataclass
class TrainSummary:
    epochs_done: int
    steps: int  # optimisation steps taken in this invocation
    seconds: float
    images_per_second: float
    last_sample_grid: Path | None


class StepContext:
    """The `gentool.api.TrainContext` handed to `training_step`."""

    def __init__(
        self,
        optimizers: Mapping[str, torch.optim.Optimizer],
        device: torch.device,
        *,
        ranks: Ranks | None = None,
        scaler: torch.amp.GradScaler | None = None,
    ):
        self.optimizers = optimizers
        self.device = device
        self.epoch = 0
        self.global_step = 0
        self.phase: str | None = None
        self.phase_optimizer: str | None = None  # automatic mode: the optimizer of the phase
        self.ranks = ranks or Ranks()
        self.scaler = scaler  # float16 autocast only: scales losses so gradients do not underflow

    def backward(self, loss: torch.Tensor) -> None:
        if self.scaler is not None:
            loss = self.scaler.scale(loss)
        # Under --amp the step runs inside autocast; the backward pass is kept out of it, as
        # PyTorch advises (its ops follow the dtypes the forward pass chose).
        with torch.autocast(self.device.type, enabled=False):
            loss.backward()

    def step(self, name: str) -> None:
        optimizer = self.optimizers[name]
        if self.ranks.distributed:
            parameters = [p for group in optimizer.param_groups for p in group["params"]]
            average_gradients(parameters, self.ranks.world_size)
        if self.scaler is not None:
            self.scaler.step(optimizer)
        else:
            optimizer.step()

    def loss_is_finite(self, loss: torch.Tensor) -> bool:
        """Whether to step on `loss`: in a distributed run, only when it is finite everywhere,
        so that every process takes the same steps."""
        finite = bool(torch.isfinite(loss))
        return all_agree(finite) if self.ranks.distributed else finite


def run_training(request: TrainRequest, console: Console) -> tuple[TrainSummary, RunFolder]:
    """Start a new run or resume one, train it, and say where it is."""
    plugin = request.entry.plugin
    assert plugin is not None  # the registry resolves loaded plugins only
    ranks = ranks_from_environment()
    device = resolve_device(request.device)
    acceleration = request.acceleration or Acceleration()
    if acceleration.sync_bn and ranks.distributed and device.type != "cuda":
        raise GentoolError(
            "--sync-bn needs CUDA devices (PyTorch's SyncBatchNorm does not run on the CPU): "
            "drop --sync-bn, or train on GPUs"
        )
    if request.ema is not None:
        check_decay(request.ema)
    if ranks.distributed:
        device = join_group(ranks, device)
    try:
        check_requested_backend(device)
        if request.resume:
            run, record, config, dataset = _resumed_run(request, plugin)
        else:
            run, record, config, dataset = _new_run(request, plugin, device)
        if ranks.distributed:  # each process named a folder; rank 0's is the run's
            run = RunFolder(str(main_value(str(run.path))))
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
            acceleration=acceleration,
            ranks=ranks,
            eval_schedule=request.eval_schedule,
        )
    finally:
        leave_group()
    return summary, run


def _new_run(
    request: TrainRequest, plugin: ModelPlugin, device: torch.device
) -> tuple[RunFolder, RunRecord, Any, ImageDataset]:
    config = plugin.parse_config(request.config_values)
    run = _fresh_run_folder(request.run_dir, plugin.name, overwrite=request.overwrite)
    dataset = load_dataset(
        request.data,
        image_size=getattr(config, "image_size", None),
        needs_labels=plugin.capabilities.conditional,
        limit=request.limit,
    )
    # Only now that the new run can start; and once, by the process that writes the run.
    if request.overwrite and run.exists() and ranks_from_environment().main:
        run.delete()
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
            "ema": request.ema,
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


def _fresh_run_folder(run_dir: Path | None, model_name: str, *, overwrite: bool) -> RunFolder:
    if run_dir is None:
        return new_run_folder(model_name)
    run = RunFolder(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise GentoolError(f"--run-dir {run_dir} is a file: choose a new or empty folder")
    if run.exists():
        if overwrite:
            return run
        raise GentoolError(
            f"{run_dir} already holds a run: continue it with --resume, replace it with "
            "--overwrite, or choose another --run-dir"
        )
    # Temporary files of a run killed before its first checkpoint hold nothing to keep.
    leftovers = set(run.leftovers())
    if run_dir.exists() and any(path not in leftovers for path in run_dir.iterdir()):
        replace = " (--overwrite replaces gentool runs only)" if overwrite else ""
        raise GentoolError(
            f"--run-dir {run_dir} is not empty and holds no run: choose a new or empty "
            f"folder{replace}"
        )
    run.remove_leftovers()
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
    acceleration: Acceleration | None = None,
    ranks: Ranks | None = None,
    eval_schedule: EvalSchedule | None = None,
) -> TrainSummary:
    """Train until `epochs` epochs are done, checkpointing after each, and return a summary.

    `epochs` None means all of the model's phases, or DEFAULT_EPOCHS for a model without any.
    Under torchrun (`ranks`) every process runs this with its share of each batch; rank 0 alone
    writes files and draws progress.
    """
    acceleration = acceleration or Acceleration()
    ranks = ranks or Ranks()
    seed = record.training["seed"]
    batch_size = record.training["batch_size"]
    shard_size(batch_size, ranks)
    torch.manual_seed(seed)  # before build, so weight initialisation follows the seed
    model = prepare_model(build_model(plugin, config, dataset.spec, device), acceleration)
    optimizers = optimizers_of(model, plugin)
    phases = phases_of(model, plugin)
    if epochs is None:  # a new run without --epochs: all of its phases, or the default
        epochs = sum(phase.epochs for phase in phases) if phases else DEFAULT_EPOCHS
        record.training["epochs"] = epochs
    # Before the first save: data too small for one batch must leave no run folder behind.
    loader = BatchLoader(
        dataset,
        batch_size,
        device=device,
        value_range=plugin.value_range,
        seed=seed,
        rank=ranks.rank,
        world_size=ranks.world_size,
    )
    if resume:
        run.load_model(record, model)
        run.load_training_state(record, optimizers)
        _restore_rank_rng(record, ranks, console)
    elif ranks.distributed:  # one set of weights, but each process its own noise
        torch.manual_seed(rank_seed(seed, ranks.rank))
    if ranks.distributed:
        broadcast_from_main(model.state_dict().values())
    ema = _moving_average(model, run, record, resume)
    processes = f" --nproc {ranks.world_size}" if ranks.distributed else ""
    resume_command = (
        f"gentool train {plugin.name} --resume --run-dir {shlex.quote(str(run))} "
        f"--epochs {epochs}{processes}"
    )

    def save() -> None:
        rank_rng = gather_to_all(rng_state(), ranks.world_size) if ranks.distributed else None
        if not ranks.main:
            return
        try:
            average = ema.state_dict() if ema else None
            run.save(record, model, optimizers, ema=average, rank_rng=rank_rng)
        except CheckpointError as error:  # the disk refused: say how to go on once it is fixed
            raise CheckpointError(f"{error}; once fixed, resume with: {resume_command}") from None

    if not resume:
        save()  # step 0: the folder is a resumable run from the start
    if acceleration.compile:
        compile_networks(model)
    autocast, scaler = _mixed_precision(device, acceleration.amp)
    progress = record.progress
    metrics = None
    if ranks.main:
        metrics = MetricsLog(run.metrics_file, keep_through_step=progress.global_step)
    else:
        console = Console(quiet=True)
    context = StepContext(optimizers, device, ranks=ranks, scaler=scaler)
    manual = bool(getattr(model, "manual_optimization", False))
    buffers = list(model.buffers())
    steps = 0
    started = time.perf_counter()
    last_grid = None
    monitor = None
    if ranks.main:
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
                if acceleration.channels_last and batch.images.dim() == 4:
                    batch.images = batch.images.contiguous(memory_format=torch.channels_last)
                with (
                    _plugin_code(record, "training_step", run),
                    _compile_failures(acceleration.compile, plugin),
                    autocast,
                ):
                    logs = train_step(model, batch, context, optimizers, manual, plugin)
                if scaler is not None:
                    scaler.update()
                stopping = stop.signal_name is not None
                if ranks.distributed:
                    logs, stopping = mean_over_ranks(logs, stopping, ranks.world_size)
                    if buffers:  # BatchNorm statistics: rank 0's, as DDP keeps them
                        broadcast_from_main(buffers)
                if ema is not None:
                    ema.update(model)
                _check_finite(logs, epoch, progress.step_in_epoch, run, record)
                progress.step_in_epoch += 1
                progress.global_step += 1
                steps += 1
                phase_field = {"phase": context.phase} if context.phase else {}
                if metrics is not None:
                    metrics.append(
                        {"epoch": epoch + 1, "step": progress.global_step, **phase_field, **logs}
                    )
                display.advance(logs)
                if stopping:
                    save()
                    raise Interrupted(
                        f"{stop.signal_name or 'a signal to another process'}: stopped at epoch "
                        f"{epoch + 1}, step {progress.step_in_epoch}/{loader.steps_per_epoch}, "
                        f"checkpoint saved; resume with: {resume_command}"
                    )
            progress.epoch, progress.step_in_epoch = epoch + 1, 0
            if plugin.capabilities.sample and ranks.main:
                grid = run.samples_dir / f"epoch_{epoch + 1:04d}.png"
                averaged = ema.applied_to(model) if ema else nullcontext()
                with _compile_failures(acceleration.compile, plugin), averaged:
                    last_grid = write_sample_grid(model, plugin, grid, seed=seed)
            save()
            display.end_epoch()
            if monitor is not None:  # measured on the weights that sample, as the grids are
                averaged = ema.applied_to(model) if ema else nullcontext()
                with _compile_failures(acceleration.compile, plugin), averaged:
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


def prepare_model(model: torch.nn.Module, acceleration: Acceleration) -> torch.nn.Module:
    """The model with synchronised BatchNorm and channels-last weights where asked; neither
    changes its state_dict."""
    if acceleration.sync_bn:
        # Converts every BatchNorm, including the one inside ConvTransposeBNReLU, which then
        # computes as the plain composition of its three layers.
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if acceleration.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def compile_networks(model: torch.nn.Module) -> None:
    """torch.compile the forward of each of the model's top-level networks, which its training
    step calls. Replacing `forward` keeps the modules, and so the state_dict keys, as they were
    (a wrapping OptimizedModule would prefix them with `_orig_mod.`; and `Module.compile()`
    leaves the forward uncompiled in this PyTorch)."""
    for network in model.children():
        if type(network).forward is not torch.nn.Module.forward:  # containers have no forward
            network.forward = torch.compile(network.forward)


def _moving_average(
    model: torch.nn.Module, run: RunFolder, record: RunRecord, resume: bool
) -> ExponentialMovingAverage | None:
    decay = record.training.get("ema")
    if decay is None:
        return None
    ema = ExponentialMovingAverage(model, decay)
    if resume:
        stored = run.load_ema(record)
        if stored is None:
            raise CheckpointError(f"{run} was trained with --ema but its checkpoint has no average")
        ema.load_state_dict(stored)
    return ema


def _restore_rank_rng(record: RunRecord, ranks: Ranks, console: Console) -> None:
    """Each process's noise stream: exactly the saved one when the run had as many processes;
    otherwise (the sharding changed, so the old streams cannot apply) fresh per-rank seeds from
    (seed, rank, step), so the resumed run is still reproducible."""
    states = record.rng.get("ranks")
    saved = len(states) if states is not None else 1
    if saved == ranks.world_size:
        if states is not None:
            set_rng_state(states[ranks.rank])
        return
    torch.manual_seed(rank_seed(record.training["seed"], ranks.rank, record.progress.global_step))
    if ranks.main:
        console.print(
            f"resuming a run of {saved} processes with {ranks.world_size}: weights, optimizers "
            "and the data order continue exactly; the noise is reseeded",
            style="dim",
            highlight=False,
        )


def _mixed_precision(
    device: torch.device, enabled: bool
) -> tuple[AbstractContextManager[object], torch.amp.GradScaler | None]:
    """The autocast for --amp: bfloat16 where the device has it, else float16 with a scaler."""
    if not enabled:
        return nullcontext(), None
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.float16), torch.amp.GradScaler("cuda")
    return torch.autocast(device.type, dtype=torch.bfloat16), None


@contextmanager
def _compile_failures(enabled: bool, plugin: ModelPlugin) -> Iterator[None]:
    """torch.compile fails at the first call (no C compiler, an unsupported op): say so in one
    line and how to go on."""
    try:
        yield
    except Exception as error:
        source = type(error).__module__
        if not enabled or not source.startswith(("torch._dynamo", "torch._inductor")):
            raise
        cause: BaseException = error
        # The compiler's own error, under dynamo's wrapping of it.
        while (inner := getattr(cause, "inner_exception", None) or cause.__cause__) is not None:
            cause = inner
        lines = str(cause).strip().splitlines()
        detail = lines[0] if lines else ""
        raise TrainingError(
            f"torch.compile failed on {plugin.name} ({type(cause).__name__}: {detail}); "
            "run without --compile"
        ) from None


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
        if context.loss_is_finite(loss):  # a non-finite loss must not reach the weights
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
    raise TrainingError(
        f"non-finite values at epoch {epoch + 1}, step {step + 1} ({values}) from "
        f"{_plugin_origin(record)}; training stopped and {_kept(run, record)}; "
        "try a lower learning rate"
    )


def _kept(run: RunFolder, record: RunRecord) -> str:
    if record.checkpoint:
        return f"the last checkpoint in {run} is kept"
    return f"no checkpoint had been written yet in {run}"


def _plugin_origin(record: RunRecord) -> str:
    plugin = record.plugin
    return (
        f"plugin {plugin.get('name')!r} (from {plugin.get('distribution')} {plugin.get('version')})"
    )


@contextmanager
def _plugin_code(record: RunRecord, method: str, run: RunFolder) -> Iterator[None]:
    """Report an exception from a plugin's code as one line that names the plugin.

    The run folder is as the last checkpoint left it: nothing is written between checkpoints but
    metrics lines, which a resume trims back to the checkpoint. GENTOOL_STRICT_PLUGINS=1 lets the
    exception through with its traceback, for the plugin's author.
    """
    try:
        yield
    except GentoolError:
        raise
    except Exception as error:
        if strict_plugins():
            raise
        raise PluginError(
            f"{_plugin_origin(record)} raised {describe_exception(error)} in {method}; "
            f"{_kept(run, record)}; GENTOOL_STRICT_PLUGINS=1 shows the traceback"
        ) from None


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
