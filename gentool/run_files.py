"""Every file name of a run folder, in one place (no torch: plots and reports read runs too).

runs/dcgan/2026-11-27_10-32-00/
    run.json                       what was trained, on what, how far; names the checkpoint
    checkpoint-00000450/
        model.safetensors          the model's state_dict
        optim.safetensors          the optimizers' tensors (their other state is in run.json)
        ema.safetensors            the moving average of the weights, when trained with --ema
    metrics.jsonl                  one line of logged scalars per step, and evaluations
    epochs.jsonl                   per epoch: wall time, sample diversity
    metrics.csv                    the logged values as a table, with `train --log csv`
    tb/                            TensorBoard event files, with `train --log tensorboard`
    loss.png                       loss and metric curves, redrawn as training goes
    report.html                    written by `gentool report`
    samples/epoch_0001.png         a sample grid per epoch; `gentool sample` and co. write
                                   beside them
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

from gentool.errors import GentoolError
from gentool.limits import SYSTEM_FOLDERS

RUN_FILE = "run.json"
METRICS_FILE = "metrics.jsonl"
EPOCHS_FILE = "epochs.jsonl"
METRICS_CSV_FILE = "metrics.csv"
TENSORBOARD_DIR = "tb"
LOSS_PLOT_FILE = "loss.png"
REPORT_FILE = "report.html"
SAMPLES_DIR = "samples"
MODEL_FILE = "model.safetensors"
OPTIM_FILE = "optim.safetensors"
EMA_FILE = "ema.safetensors"
CHECKPOINT_FILES = (MODEL_FILE, OPTIM_FILE, EMA_FILE)
CHECKPOINT_PREFIX = "checkpoint-"
CHECKPOINT_NAME = re.compile(r"checkpoint-\d{8}")  # no separators: run.json names no other path
EPOCH_GRID_NAME = re.compile(r"epoch_(\d+)\.png")
# Staging folders and atomic writes' temporary files are hidden and end so; a crash leaves them.
LEFTOVER_SUFFIX = ".tmp"


class RunFiles:
    """The paths of one run folder's files."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __str__(self) -> str:
        return str(self.path)

    @property
    def run_file(self) -> Path:
        return self.path / RUN_FILE

    @property
    def metrics_file(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def epochs_file(self) -> Path:
        return self.path / EPOCHS_FILE

    @property
    def loss_plot(self) -> Path:
        return self.path / LOSS_PLOT_FILE

    @property
    def report_file(self) -> Path:
        return self.path / REPORT_FILE

    @property
    def samples_dir(self) -> Path:
        return self.path / SAMPLES_DIR

    def checkpoint_dir(self, name: str) -> Path:
        return self.path / name

    def staging_dir(self, name: str) -> Path:
        """Where checkpoint `name` is written before it is renamed into place."""
        return self.path / f".{name}{LEFTOVER_SUFFIX}"

    def epoch_grid(self, epoch: int) -> Path:
        """The sample grid drawn after epoch `epoch` (from 1)."""
        return self.samples_dir / f"epoch_{epoch:04d}.png"

    def sample_file(
        self, seed: int, count: int, output_format: str, label: int | None = None
    ) -> Path:
        """Where `gentool sample` writes by default; one class's draws (`label`) apart from the
        others', so that drawing another class does not replace them."""
        drawn = "" if label is None else f"_class{label}"
        return self.samples_dir / f"sample_seed{seed}_n{count}{drawn}.{output_format}"

    def interpolation_file(self, method: str, seed: int, label: int | None = None) -> Path:
        walked = "" if label is None else f"_class{label}"
        return self.samples_dir / f"interpolate_{method}_seed{seed}{walked}.png"

    def reconstruction_file(self, count: int) -> Path:
        return self.samples_dir / f"reconstruct_n{count}.png"

    def reconstruction_files(self) -> list[Path]:
        return sorted(self.samples_dir.glob("reconstruct_*.png"))

    def epoch_grids(self) -> list[tuple[int, Path]]:
        """(epoch, path) of every epoch's sample grid, in epoch order."""
        return sorted(
            (int(match.group(1)), path)
            for path in self.samples_dir.glob("epoch_*.png")
            if (match := EPOCH_GRID_NAME.fullmatch(path.name))
        )


def checkpoint_name(global_step: int) -> str:
    return f"{CHECKPOINT_PREFIX}{global_step:08d}"


def enclosing_run(path: Path) -> Path | None:
    """The run folder that `path` lies inside (not `path` itself), or None; named as `path`
    names it where it can be."""
    path = Path(path)
    folders = [*path.parents, *(Path.cwd().parents if not path.is_absolute() else ())]
    return next((folder for folder in folders if (folder / RUN_FILE).is_file()), None)


def output_path(path: Path, flag: str = "--out") -> Path:
    """The file to write what the user asked to have at `path`: the one a link there points to,
    as a link is the user's way of naming that file and replacing the link would break it for
    everyone who follows it (`/dev/stdout` is such a link). Refused when it, or `path`, is one of
    a run's own files: writing there would destroy the run (its run.json, a checkpoint, its logs)
    or be destroyed with it (a checkpoint folder is removed whole when the next one is
    committed)."""
    path = Path(path)
    target = _linked_file(path)
    for named in dict.fromkeys((path, target)):
        _refuse_a_file_of_a_run(named, flag)
    return target


def file_output_path(path: Path, flag: str = "--out") -> Path:
    """`output_path` for what only a regular file can hold (an archive, an exported network):
    a path that names no file, that leads into the system's device or process folders through
    any link, or that is something other than a file is refused."""
    path = Path(path)
    if not path.name or path.name in (".", ".."):
        raise GentoolError(f"{flag} {str(path)!r} names no file: give a file name")
    for hop in (*_links_from(path), Path(os.path.realpath(path))):
        if str(hop).startswith(SYSTEM_FOLDERS):
            raise GentoolError(f"{flag} {path} leads to {hop}: {flag} writes a regular file")
    target = output_path(path, flag)
    if target.exists() and not target.is_file():
        raise GentoolError(f"{flag} {path} is not a regular file: name a file")
    return target


def _links_from(path: Path) -> Iterator[Path]:
    """`path` and every path its chain of symbolic links leads through (a loop ends it)."""
    seen: set[Path] = set()
    while path not in seen:
        seen.add(path)
        yield path
        if not path.is_symlink():
            return
        path = path.parent / os.readlink(path)


def _linked_file(path: Path) -> Path:
    """`path`, or the file it links to where that is a file in a folder: a link to a pipe or a
    socket (/proc/self/fd/1 under `| cat`) is written into through the link."""
    if not path.is_symlink():
        return path
    resolved = Path(os.path.realpath(path))
    try:
        linked = os.stat(path)
    except FileNotFoundError:  # a dangling link names the file to create
        return resolved
    try:
        return resolved if os.path.samestat(linked, os.stat(resolved)) else path
    except OSError:
        return path


def _refuse_a_file_of_a_run(path: Path, flag: str) -> None:
    run = enclosing_run(path)
    if run is None:
        return
    first = Path(os.path.abspath(path)).relative_to(os.path.abspath(run)).parts[0]
    owned = (
        first
        in (RUN_FILE, METRICS_FILE, EPOCHS_FILE, LOSS_PLOT_FILE, METRICS_CSV_FILE, TENSORBOARD_DIR)
        or first.startswith((CHECKPOINT_PREFIX, "."))
        or (first == SAMPLES_DIR and EPOCH_GRID_NAME.fullmatch(Path(path).name) is not None)
    )
    if owned:
        raise GentoolError(
            f"{flag} {path} is a file of the run in {run}, which it would destroy or lose: "
            "choose another file"
        )
