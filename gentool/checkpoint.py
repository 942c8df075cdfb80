"""Run folders and checkpoints: safetensors for tensors, JSON for everything else, never pickle.

A run folder looks like::

    runs/dcgan/2026-11-27_10-32-00/
        run.json                       what was trained, on what, how far; names the checkpoint
        checkpoint-00000450/
            model.safetensors          the model's state_dict
            optim.safetensors          the optimizers' tensors (their other state is in run.json)
            ema.safetensors            the moving average of the weights, when trained with --ema
        metrics.jsonl                  one line of logged scalars per step, and evaluations
        epochs.jsonl                   per epoch: wall time, sample diversity (gentool.monitor)
        loss.png                       loss and metric curves, redrawn every epoch
        samples/epoch_0001.png         a sample grid per epoch

A checkpoint is written to a temporary folder, fsynced and renamed into place; then run.json is
atomically replaced to point at it, and only then are older checkpoint folders removed. A crash at
any moment therefore leaves run.json naming a complete checkpoint. run.json also records the
SHA-256 of each checkpoint file, and loading checks it: safetensors itself would load flipped bits
in the tensor data without a word.
"""

from __future__ import annotations

import base64
import datetime as dt
import errno
import hashlib
import json
import re
import shutil
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save_file

from gentool import __version__
from gentool.atomic import fsync_path, write_text
from gentool.errors import CheckpointError

RUN_FORMAT = 1  # bump when run.json changes incompatibly; older gentools then refuse the run
RUNS_ROOT = Path("runs")
MODEL_FILE = "model.safetensors"
OPTIM_FILE = "optim.safetensors"
EMA_FILE = "ema.safetensors"
RUN_FILE = "run.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_PREFIX = "checkpoint-"
_CHECKPOINT_NAME = re.compile(r"checkpoint-\d{8}")  # no separators: run.json names no other path
_LEFTOVER_SUFFIX = ".tmp"  # staging folders and atomic_write's temporary files, from a crash


@dataclass
class Progress:
    """How far training got: the next batch to train is `step_in_epoch` of `epoch` (from 0)."""

    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0


@dataclass
class RunRecord:
    """The contents of run.json."""

    plugin: dict[str, Any]  # name, distribution, version, api_version
    config: dict[str, Any]
    data: dict[str, Any]  # source, fingerprint, count, limit, spec
    training: dict[str, Any]  # seed, batch_size, epochs, device
    progress: Progress = field(default_factory=Progress)
    checkpoint: str | None = None
    checkpoint_sha256: dict[str, str] = field(default_factory=dict)  # file name → hex digest
    optimizers: dict[str, Any] = field(default_factory=dict)  # non-tensor optimizer state
    rng: dict[str, Any] = field(default_factory=dict)
    gentool_version: str = __version__
    format: int = RUN_FORMAT
    created: str = field(default_factory=lambda: _now())
    updated: str = field(default_factory=lambda: _now())

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"


class RunFolder:
    """One training run on disk."""

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
    def samples_dir(self) -> Path:
        return self.path / "samples"

    def exists(self) -> bool:
        return self.run_file.exists()

    def read(self, *, expected_plugin: str | None = None) -> RunRecord:
        """Parse run.json, refusing folders that are not runs, are damaged, or are too new."""
        if not self.path.is_dir():
            raise CheckpointError(f"run folder {self.path} does not exist")
        if not self.run_file.exists():
            raise CheckpointError(f"{self.path} is not a gentool run folder (no {RUN_FILE})")
        try:
            raw = json.loads(self.run_file.read_text(encoding="utf-8"))
            if not isinstance(raw, dict):
                raise ValueError("not a JSON object")
            run_format = raw.get("format")
            if isinstance(run_format, int) and run_format > RUN_FORMAT:
                raise CheckpointError(
                    f"{self.run_file} was written by gentool {raw.get('gentool_version', '?')} "
                    f"(run format {run_format}; this gentool {__version__} reads up to "
                    f"{RUN_FORMAT}): upgrade gentool"
                )
            raw["progress"] = Progress(**raw.get("progress", {}))
            record = RunRecord(**raw)
            _check_record_types(record)
        except CheckpointError:
            raise
        except (ValueError, TypeError, UnicodeDecodeError) as error:
            raise CheckpointError(f"{self.run_file} is damaged: {error}") from None
        if expected_plugin is not None and record.plugin.get("name") != expected_plugin:
            raise CheckpointError(
                f"{self.path} is a run of {record.plugin.get('name')!r}, not {expected_plugin!r}"
            )
        return record

    def save(
        self,
        record: RunRecord,
        model: torch.nn.Module,
        optimizers: Mapping[str, torch.optim.Optimizer],
        *,
        ema: Mapping[str, torch.Tensor] | None = None,
        rank_rng: list[Any] | None = None,
    ) -> None:
        """Write a checkpoint of `model` and `optimizers` and commit `record` pointing at it.

        `ema` is the moving average of the weights (state_dict keys), when training keeps one;
        `rank_rng` the random generator states of every process of a distributed run, in rank
        order, so that it resumes exactly on as many processes.
        """
        name = f"{CHECKPOINT_PREFIX}{record.progress.global_step:08d}"
        current = self._current_checkpoint_name()
        committed = (record.checkpoint, dict(record.checkpoint_sha256))
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            # The same step saved twice holds the same tensors: only run.json changes then.
            if name != current:
                record.checkpoint_sha256 = self._write_checkpoint(
                    name, record, model, optimizers, ema
                )
            record.checkpoint = name
            record.rng = rng_state()
            if rank_rng is not None:
                record.rng["ranks"] = rank_rng
            record.updated = _now()
            write_text(self.run_file, record.to_json())
        except OSError as error:
            if name != current:  # written but never named by run.json: nothing refers to it
                shutil.rmtree(self.path / name, ignore_errors=True)
            record.checkpoint, record.checkpoint_sha256 = committed
            raise CheckpointError(self._save_failure(error, current)) from None
        for stale in self.path.glob(CHECKPOINT_PREFIX + "*"):
            if stale.name != name:
                shutil.rmtree(stale, ignore_errors=True)
        self.remove_leftovers()

    def delete(self) -> None:
        """Remove the whole run folder (for --overwrite, which the user asked for)."""
        shutil.rmtree(self.path)

    def remove_leftovers(self) -> None:
        """Delete temporary files and folders that a crash in the middle of a save left behind."""
        for path in self.leftovers():
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)

    def leftovers(self) -> list[Path]:
        if not self.path.is_dir():
            return []
        return [
            path
            for path in self.path.iterdir()
            if path.name.startswith(".") and path.name.endswith(_LEFTOVER_SUFFIX)
        ]

    def _save_failure(self, error: OSError, current: str | None) -> str:
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            reason = f"the disk is full ({error.strerror})"
        else:
            reason = error.strerror or str(error)
        kept = (
            f"the previous checkpoint {current} is intact and run.json still names it"
            if current
            else "no checkpoint had been written yet"
        )
        return f"could not save a checkpoint in {self.path}: {reason}; nothing was lost: {kept}"

    def load_model(
        self,
        record: RunRecord,
        model: torch.nn.Module,
        *,
        tensors: Mapping[str, torch.Tensor] | None = None,
    ) -> None:
        """Load the checkpoint's weights (or `tensors` read from it) into `model`, strictly."""
        if tensors is None:
            tensors = self._read_tensors(record, MODEL_FILE)
        try:
            model.load_state_dict(tensors, strict=True)
        except RuntimeError as error:
            detail = str(error).strip().splitlines()[-1].strip()
            raise CheckpointError(
                f"the weights in {self.path} do not fit this model ({detail}); "
                "was it trained with a different config?"
            ) from None

    def load_training_state(
        self, record: RunRecord, optimizers: Mapping[str, torch.optim.Optimizer]
    ) -> None:
        """Restore the optimizers and the random number generators for an exact resume."""
        tensors = self._read_tensors(record, OPTIM_FILE)
        for name, optimizer in optimizers.items():
            if name not in record.optimizers:
                raise CheckpointError(f"{self.path} has no state for optimizer {name!r}")
            state = _unflatten_optimizer(name, record.optimizers[name], tensors)
            try:
                optimizer.load_state_dict(state)
            except (ValueError, KeyError) as error:
                raise CheckpointError(
                    f"optimizer {name!r} state in {self.path} does not fit: {error}"
                ) from None
        set_rng_state(record.rng)

    def load_ema(self, record: RunRecord) -> dict[str, torch.Tensor] | None:
        """The checkpoint's moving average of the weights, or None when it keeps none."""
        if not record.checkpoint:
            return None
        listed = EMA_FILE in record.checkpoint_sha256  # then a missing file is damage
        if not listed and not (self.path / record.checkpoint / EMA_FILE).exists():
            return None
        return self._read_tensors(record, EMA_FILE)

    def _current_checkpoint_name(self) -> str | None:
        if not self.run_file.exists():
            return None
        try:
            return json.loads(self.run_file.read_text(encoding="utf-8")).get("checkpoint")
        except (ValueError, OSError):
            return None

    def _write_checkpoint(
        self,
        name: str,
        record: RunRecord,
        model: torch.nn.Module,
        optimizers: Mapping[str, torch.optim.Optimizer],
        ema: Mapping[str, torch.Tensor] | None,
    ) -> dict[str, str]:
        """Write the checkpoint folder `name`; return the SHA-256 of each of its files."""
        final = self.path / name
        staging = self.path / f".{name}.tmp"
        for leftover in (final, staging):  # from a crash before run.json named them
            shutil.rmtree(leftover, ignore_errors=True)
        staging.mkdir(parents=True)
        try:
            # One metadata key: safetensors writes its metadata in hash order, which differs
            # between processes, and the same weights must make the same bytes (and digests).
            about = {"plugin": record.plugin, "config": record.config}
            metadata = {"gentool": json.dumps(about, sort_keys=True)}
            save_file(_cpu_copies(model.state_dict()), staging / MODEL_FILE, metadata=metadata)
            optimizer_tensors = {}
            optimizer_rest = {}
            for optimizer_name, optimizer in optimizers.items():
                tensors, rest = _flatten_optimizer(optimizer_name, optimizer.state_dict())
                optimizer_tensors.update(tensors)
                optimizer_rest[optimizer_name] = rest
            save_file(optimizer_tensors, staging / OPTIM_FILE)
            if ema is not None:
                save_file(_cpu_copies(ema), staging / EMA_FILE, metadata=metadata)
            digests = {}
            for file in staging.iterdir():
                fsync_path(file)
                digests[file.name] = _sha256(file.read_bytes())
            staging.rename(final)
            fsync_path(self.path)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        record.optimizers = optimizer_rest
        return digests

    def _read_tensors(self, record: RunRecord, file_name: str) -> dict[str, torch.Tensor]:
        if not record.checkpoint:
            raise CheckpointError(f"{self.path} has no checkpoint yet")
        path = self.path / record.checkpoint / file_name
        if not path.exists():
            raise CheckpointError(f"checkpoint file {path} is missing")
        try:
            content = path.read_bytes()
        except OSError as error:
            raise CheckpointError(f"cannot read checkpoint file {path}: {error}") from None
        expected = record.checkpoint_sha256.get(file_name)
        if expected is not None and _sha256(content) != expected:
            raise CheckpointError(
                f"checkpoint file {path} is damaged: its content changed since it was saved "
                "(SHA-256 mismatch)"
            )
        try:
            return load_safetensors(content)
        except (SafetensorError, ValueError) as error:
            raise CheckpointError(f"checkpoint file {path} is damaged: {error}") from None


def new_run_folder(model_name: str, root: Path = RUNS_ROOT) -> RunFolder:
    """A not yet existing, date-named folder for a run of `model_name`.

    The folder is created by the first checkpoint, so a run that fails before it leaves nothing.
    """
    stamp = dt.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    parent = root / model_name
    path = parent / stamp
    suffix = 1
    while path.exists():
        path = parent / f"{stamp}-{suffix}"
        suffix += 1
    return RunFolder(path)


def latest_run(model_name: str, root: Path = RUNS_ROOT) -> RunFolder:
    """The most recently updated run of `model_name` under `root`."""
    parent = root / model_name
    runs = [RunFolder(path) for path in parent.glob("*") if (path / RUN_FILE).is_file()]
    if not runs:
        raise CheckpointError(
            f"no runs of {model_name!r} under {parent}: train one with `gentool train "
            f"{model_name}` or pass --run DIR"
        )
    return max(runs, key=lambda run: run.run_file.stat().st_mtime_ns)


def _check_record_types(record: RunRecord) -> None:
    """Refuse a run.json whose fields have the wrong shape, before anything relies on them."""
    for name in ("plugin", "config", "data", "training", "checkpoint_sha256", "optimizers", "rng"):
        if not isinstance(getattr(record, name), dict):
            raise ValueError(f"{name!r} is not a JSON object")
    progress = record.progress
    counters = (progress.epoch, progress.step_in_epoch, progress.global_step)
    if not all(isinstance(value, int) and value >= 0 for value in counters):
        raise ValueError("'progress' must hold counts ≥ 0")
    if record.checkpoint is not None and not (
        isinstance(record.checkpoint, str) and _CHECKPOINT_NAME.fullmatch(record.checkpoint)
    ):
        raise ValueError("'checkpoint' must be a name like checkpoint-00000450, not a path")


def _sha256(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def _cpu_copies(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # Copies, because safetensors refuses tensors that share memory (tied weights, views).
    return {key: value.detach().to("cpu", copy=True).contiguous() for key, value in tensors.items()}


def _flatten_optimizer(
    name: str, state_dict: Mapping[str, Any]
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer's state_dict into named tensors and a JSON-friendly remainder."""
    tensors: dict[str, torch.Tensor] = {}
    rest: dict[str, Any] = {"param_groups": state_dict["param_groups"], "state": {}}
    for param_id, param_state in state_dict["state"].items():
        for key, value in param_state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{name}.{param_id}.{key}"] = value
            else:
                rest["state"].setdefault(str(param_id), {})[key] = value
    return _cpu_copies(tensors), rest


def _unflatten_optimizer(
    name: str, rest: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]
) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {
        int(param_id): dict(values) for param_id, values in rest.get("state", {}).items()
    }
    prefix = f"{name}."
    for key, value in tensors.items():
        if key.startswith(prefix):
            param_id, _, state_key = key[len(prefix) :].partition(".")
            state.setdefault(int(param_id), {})[state_key] = value
    # JSON turned tuples (Adam's betas) into lists; give the optimizer back what it stored.
    groups = [
        {
            key: tuple(value) if isinstance(value, list) and key != "params" else value
            for key, value in group.items()
        }
        for group in rest["param_groups"]
    ]
    return {"state": state, "param_groups": groups}


def rng_state() -> dict[str, Any]:
    """This process's random generator states, JSON-friendly (as run.json stores them)."""
    state = {"torch": _encode(torch.get_rng_state())}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [_encode(device_state) for device_state in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    if "torch" in state:
        torch.set_rng_state(_decode(state["torch"]))
    if "cuda" in state and torch.cuda.is_available():
        states = [_decode(device_state) for device_state in state["cuda"]]
        torch.cuda.set_rng_state_all(states[: torch.cuda.device_count()])


def _encode(tensor: torch.Tensor) -> str:
    return base64.b64encode(tensor.numpy().tobytes()).decode("ascii")


def _decode(text: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(text)), dtype=torch.uint8)


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
