"""Where a training writes and what it trains on: a new run folder, or the run being resumed.

A new run's folder is chosen here but created by its first checkpoint, so a run that fails
before it leaves nothing. A resumed run is refused unless it can continue exactly: the run's own
config, and the data it was trained on.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gentool.api import Phase
from gentool.checkpoint import RunFolder, latest_run, new_run_folder
from gentool.config import config_to_dict
from gentool.data import BUILTIN_PREFIX, ImageDataset, load_dataset
from gentool.data.decoding import Tracker
from gentool.errors import ConfigError, DataError, GentoolError
from gentool.models import image_size_of, plugin_for_config
from gentool.record import DataInfo, PluginInfo, RunRecord, TrainingSettings
from gentool.run_files import enclosing_run
from gentool.terminal import counted
from gentool.training.claim import RunClaim, remove_stale_replacements
from gentool.training.request import TrainingPlan
from gentool.training.tracking import LoggerChoice, load_loggers

DEFAULT_EPOCHS = 5
# How gentool 0.1 before its mapped data cache named folder and .npz data: by the files' bytes.
_FILE_FINGERPRINTS = ("folder:", "npz:")
DEFAULT_SEED = 0


@dataclass
class RunStart:
    """A run folder to train in, the model's config and the data, before the model exists."""

    run: RunFolder
    config: Any
    dataset: ImageDataset
    record: RunRecord | None  # the resumed run's; a new run's is made once its model is built
    claim: RunClaim | None  # None in processes that do not write the run (ranks other than 0)
    loggers: LoggerChoice  # what --log named or, when it was not given, a resumed run's own


def start_new_run(
    plan: TrainingPlan, claims: ExitStack | None, track: Tracker | None = None
) -> RunStart:
    """A new run; the process that writes it claims its folder, held until `claims` closes
    (None in the processes that do not write). `track` shows the data's decoding."""
    request, plugin = plan.request, plan.plugin
    config = plugin.parse_config(plan.config_values)
    run = _fresh_run_folder(request.run_dir, plugin.name, overwrite=request.overwrite)
    claim = None
    if claims is not None:
        mode = "replace" if request.overwrite and run.exists() else "new"
        claim = claims.enter_context(RunClaim(run, mode, dated=request.run_dir is None))
    dataset = load_dataset(
        request.data,
        image_size=image_size_of(config),
        needs_labels=plugin_for_config(plugin, config).capabilities.conditional,
        limit=request.limit,
        verify=request.verify_data,
        track=track,
    )
    loggers = plan.loggers if plan.loggers is not None else LoggerChoice(names=())
    return RunStart(run, config, dataset, record=None, claim=claim, loggers=loggers)


def new_record(plan: TrainingPlan, start: RunStart, phases: list[Phase], device: str) -> RunRecord:
    """A new run's run.json: its epochs, unless given, are all of the model's phases."""
    request, plugin, dataset = plan.request, plan.plugin, start.dataset
    epochs = request.epochs or sum(phase.epochs for phase in phases) or DEFAULT_EPOCHS
    return RunRecord(
        plugin=PluginInfo(
            name=plugin.name,
            distribution=plan.request.entry.distribution,
            version=plan.request.entry.version,
            api_version=plugin.api_version,
        ),
        config=config_to_dict(start.config),
        data=DataInfo(
            source=dataset.source,
            count=len(dataset),
            fingerprint=dataset.fingerprint,
            spec=dataset.spec,
            limit=request.limit,
        ),
        training=TrainingSettings(
            seed=seed_of(plan, start),
            batch_size=request.batch_size or plugin.default_batch_size,
            epochs=epochs,
            device=device,
            ema=request.ema,
            loggers=list(start.loggers.names),
            augment=list(plan.augment),
        ),
    )


def seed_of(plan: TrainingPlan, start: RunStart) -> int:
    """The run's seed: the resumed run's own, else the one asked for, else DEFAULT_SEED."""
    if start.record is not None:
        return start.record.training.seed
    return DEFAULT_SEED if plan.request.seed is None else plan.request.seed


def start_resumed_run(
    plan: TrainingPlan, claims: ExitStack | None, track: Tracker | None = None
) -> RunStart:
    """The run to resume, checked to continue exactly; claimed and tracked as `start_new_run`
    says."""
    request, plugin = plan.request, plan.plugin
    run = (
        RunFolder(request.run_dir) if request.run_dir else latest_run(plugin.name, flag="--run-dir")
    )
    record = run.read(expected_plugin=plugin.name)
    claim = claims.enter_context(RunClaim(run, "resume")) if claims is not None else None
    config = run.read_config(plugin, record)
    epochs = request.epochs or record.training.epochs
    if epochs <= record.progress.epoch:
        raise GentoolError(
            f"{run} has already trained {counted(record.progress.epoch, 'epoch')}: "
            f"pass --epochs N with N > {record.progress.epoch} to train further"
        )
    record.training.epochs = epochs
    if plan.loggers is not None:  # --log replaces the loggers the run had
        loggers = plan.loggers
        record.training.loggers = list(loggers.names)
    else:
        loggers = load_loggers(record.training.loggers, recorded=True)
    _check_resumed_augmentation(plan, record)
    source = _recorded_source(record, run) if request.data is None else request.data
    dataset = load_dataset(
        source,
        image_size=image_size_of(config),
        needs_labels=plugin_for_config(plugin, config).capabilities.conditional,
        limit=record.data.limit,
        verify=request.verify_data,
        track=track,
    )
    if dataset.fingerprint != record.data.fingerprint:
        if record.data.fingerprint.startswith(_FILE_FINGERPRINTS):
            raise DataError(
                f"{run} was trained by an earlier gentool, which identified its data by the "
                "files' bytes rather than the decoded pixels: resume it with that version, or "
                "start a new run"
            )
        raise DataError(
            f"the data at {source!r} differs from what {run} was trained on; "
            "an exact resume needs the same data"
        )
    return RunStart(run, config, dataset, record, claim, loggers)


def _check_resumed_augmentation(plan: TrainingPlan, record: RunRecord) -> None:
    """--augment on a resume may repeat the run's own augmentations, never change them."""
    if plan.request.augment is not None and list(plan.augment) != record.training.augment:
        own = ", ".join(record.training.augment) or "none"
        raise ConfigError(
            f"--augment cannot change a run being resumed (it trains with: {own}); leave it out"
        )


def _recorded_source(record: RunRecord, run: RunFolder) -> str:
    """The data the run was trained on, which must still be where it was."""
    source = record.data.source
    if not source.startswith(BUILTIN_PREFIX) and not Path(source).expanduser().exists():
        raise DataError(
            f"{run} was trained on {source!r}, which does not exist now: if it moved, give its "
            "new place with --resume --data NEW_PATH"
        )
    return source


def _fresh_run_folder(run_dir: Path | None, model_name: str, *, overwrite: bool) -> RunFolder:
    if run_dir is None:
        return new_run_folder(model_name)
    run = RunFolder(run_dir)
    if run_dir.is_symlink() and not run_dir.exists():
        raise GentoolError(
            f"--run-dir {run_dir} is a link to a folder that does not exist: make the folder, or "
            "choose another --run-dir"
        )
    if run_dir.exists() and not run_dir.is_dir():
        raise GentoolError(f"--run-dir {run_dir} is a file: choose a new or empty folder")
    if (outer := enclosing_run(run_dir)) is not None:
        raise GentoolError(
            f"--run-dir {run_dir} lies inside the run in {outer}, whose saves would delete it: "
            "choose a folder outside it"
        )
    remove_stale_replacements(run_dir)
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
    return run
