"""Run folders and their checkpoints: safetensors for tensors, JSON for everything else, never
pickle. `gentool.run_files` names the files; `gentool.record` is run.json.

A checkpoint is written to a hidden staging folder, fsynced and renamed into place; then run.json
is atomically replaced to point at it, and only then are older checkpoint folders removed. A crash
at any moment therefore leaves run.json naming a complete checkpoint. run.json also records the
SHA-256 of each checkpoint file, and loading checks it: safetensors itself would load flipped bits
in the tensor data without a word.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import errno
import hashlib
import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as serialize_safetensors

from gentool.atomic import fsync_path, write_text
from gentool.errors import CheckpointError, ConfigError
from gentool.limits import check_allocation, open_untrusted, read_untrusted
from gentool.optimizer_state import cpu_copies, flatten_optimizer, restore_optimizer
from gentool.record import FutureRunFormat, RunRecord, now
from gentool.run_files import (
    CHECKPOINT_NAME,
    CHECKPOINT_PREFIX,
    EMA_FILE,
    LEFTOVER_SUFFIX,
    MODEL_FILE,
    OPTIM_FILE,
    RUN_FILE,
    RunFiles,
    checkpoint_name,
)

if TYPE_CHECKING:
    from gentool.api import ModelPlugin

RUNS_ROOT = Path("runs")
MAX_RUN_FILE_BYTES = 2**26  # run.json is kilobytes; far larger is damage


def _mismatch(model: torch.nn.Module, tensors: Mapping[str, torch.Tensor]) -> str:
    """Which state_dict keys differ between a model and a checkpoint, in words."""
    expected = model.state_dict()
    missing = [key for key in expected if key not in tensors]
    unexpected = [key for key in tensors if key not in expected]
    reshaped = [
        f"{key} {tuple(tensors[key].shape)} for {tuple(value.shape)}"
        for key, value in expected.items()
        if key in tensors and tensors[key].shape != value.shape
    ]
    parts = [
        f"{what}: {', '.join(keys[:3])}{' …' if len(keys) > 3 else ''}"
        for what, keys in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("other shapes", reshaped),
        )
        if keys
    ]
    return "; ".join(parts) or "the tensors differ"


class RunFolder(RunFiles):
    """One training run on disk."""

    def exists(self) -> bool:
        return self.run_file.exists()

    def read(self, *, expected_plugin: str | None = None) -> RunRecord:
        """Parse run.json, refusing folders that are not runs, are damaged, or are too new."""
        if not self.path.is_dir():
            raise CheckpointError(f"run folder {self.path} does not exist")
        if not self.run_file.exists():
            raise CheckpointError(f"{self.path} is not a gentool run folder (no run.json)")
        try:
            text = read_untrusted(self.run_file, MAX_RUN_FILE_BYTES).decode("utf-8")
            record = RunRecord.from_json(text)
        except FutureRunFormat as error:
            raise CheckpointError(f"{self.run_file} was {error}: upgrade gentool") from None
        except (ValueError, TypeError) as error:
            raise CheckpointError(f"{self.run_file} is damaged: {error}") from None
        except RecursionError:
            raise CheckpointError(f"{self.run_file} is damaged: it nests too deeply") from None
        except OSError as error:
            reason = error.strerror or str(error)
            raise CheckpointError(f"cannot read {self.run_file}: {reason}") from None
        if expected_plugin is not None and record.plugin.name != expected_plugin:
            raise CheckpointError(
                f"{self.path} is a run of {record.plugin.name!r}, not {expected_plugin!r}"
            )
        return record

    def read_config(self, plugin: ModelPlugin, record: RunRecord) -> Any:
        """The plugin's config of this run, as its run.json records it."""
        try:
            return plugin.parse_recorded_config(record.config)
        except ConfigError as error:
            raise CheckpointError(
                f"{self.run_file} records a config that {plugin.name} does not accept: {error}; "
                f"was it edited by hand, or trained by another version of the plugin "
                f"({record.plugin.version})?"
            ) from None

    def save(
        self,
        record: RunRecord,
        model: torch.nn.Module,
        optimizers: Mapping[str, torch.optim.Optimizer],
        *,
        ema: Mapping[str, torch.Tensor] | None = None,
    ) -> None:
        """Write a checkpoint of `model` and `optimizers` and commit `record` pointing at it.

        `ema` is the moving average of the weights (state_dict keys), when training keeps one.
        The record's other fields (progress, random states) are the caller's to set.
        """
        name = checkpoint_name(record.progress.global_step)
        current = self._current_checkpoint_name()
        committed = (record.checkpoint, dict(record.checkpoint_sha256), dict(record.optimizers))
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            # The same step saved twice holds the same tensors: only run.json changes then.
            if name != current:
                self._write_checkpoint(name, record, model, optimizers, ema)
            record.checkpoint = name
            record.updated = now()
            write_text(self.run_file, record.to_json())
        except OSError as error:
            if name != current:  # written but never named by run.json: nothing refers to it
                shutil.rmtree(self.checkpoint_dir(name), ignore_errors=True)
            record.checkpoint, record.checkpoint_sha256, record.optimizers = committed
            raise CheckpointError(self._save_failure(error, current)) from None
        for stale in self.path.glob(CHECKPOINT_PREFIX + "*"):
            # Only names gentool writes: a user's `checkpoint-best` beside them is theirs.
            if stale.name != name and CHECKPOINT_NAME.fullmatch(stale.name):
                _remove(stale)
        self.remove_leftovers()

    def delete(self) -> None:
        """Remove the whole run folder (for --overwrite, which the user asked for)."""
        shutil.rmtree(self.path)

    def remove_leftovers(self) -> None:
        """Delete temporary files and folders that a crash in the middle of a save (or of a
        sample grid's write) left behind."""
        for path in self.leftovers():
            _remove(path)

    def leftovers(self) -> list[Path]:
        return [
            path
            for folder in (self.path, self.samples_dir)
            if folder.is_dir() and not folder.is_symlink()
            for path in folder.iterdir()
            if path.name.startswith(".") and path.name.endswith(LEFTOVER_SUFFIX)
        ]

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
        except RuntimeError:
            raise CheckpointError(
                f"the weights in {self.path} do not fit this model ({_mismatch(model, tensors)})"
                f"; the plugin's code or the run's config changed since it was trained: "
                f"install the plugin version that trained it ({record.plugin.version}), or "
                "train again"
            ) from None

    def load_optimizers(
        self, record: RunRecord, optimizers: Mapping[str, torch.optim.Optimizer]
    ) -> None:
        """Restore the optimizers' state from the checkpoint."""
        tensors = self._read_tensors(record, OPTIM_FILE)
        for name, optimizer in optimizers.items():
            if name not in record.optimizers:
                raise CheckpointError(f"{self.path} has no state for optimizer {name!r}")
            try:
                restore_optimizer(optimizer, name, record.optimizers[name], tensors)
            except (ValueError, KeyError, TypeError, AttributeError, RuntimeError) as error:
                raise CheckpointError(
                    f"optimizer {name!r} state in {self.path} does not fit: {error}"
                ) from None

    def load_ema(self, record: RunRecord) -> dict[str, torch.Tensor] | None:
        """The checkpoint's moving average of the weights, or None when it keeps none."""
        if not record.checkpoint:
            return None
        listed = EMA_FILE in record.checkpoint_sha256  # then a missing file is damage
        if not listed and not (self.checkpoint_dir(record.checkpoint) / EMA_FILE).exists():
            if record.training.ema is not None:
                raise CheckpointError(
                    f"{self.path} trains with --ema, but its checkpoint {record.checkpoint} "
                    "keeps no moving average of the weights: was it edited by hand?"
                )
            return None
        return self._read_tensors(record, EMA_FILE)

    def _current_checkpoint_name(self) -> str | None:
        try:
            raw = json.loads(read_untrusted(self.run_file, MAX_RUN_FILE_BYTES))
            name = raw.get("checkpoint")
        except (ValueError, OSError, AttributeError, RecursionError):
            return None
        return name if isinstance(name, str) and CHECKPOINT_NAME.fullmatch(name) else None

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

    def _write_checkpoint(
        self,
        name: str,
        record: RunRecord,
        model: torch.nn.Module,
        optimizers: Mapping[str, torch.optim.Optimizer],
        ema: Mapping[str, torch.Tensor] | None,
    ) -> None:
        """Write the checkpoint folder `name`; record its digests and optimizer state."""
        final, staging = self.checkpoint_dir(name), self.staging_dir(name)
        for leftover in (final, staging):  # from a crash before run.json named them
            _remove(leftover)
        staging.mkdir(parents=True)
        try:
            # One metadata key: safetensors writes its metadata in hash order, which differs
            # between processes, and the same weights must make the same bytes (and digests).
            about = {"plugin": dataclasses.asdict(record.plugin), "config": record.config}
            metadata = {"gentool": json.dumps(about, sort_keys=True)}
            optimizer_tensors: dict[str, torch.Tensor] = {}
            optimizer_rest = {}
            for optimizer_name, optimizer in optimizers.items():
                tensors, rest = flatten_optimizer(optimizer_name, optimizer.state_dict())
                optimizer_tensors.update(tensors)
                optimizer_rest[optimizer_name] = rest
            files = {MODEL_FILE: (cpu_copies(model.state_dict()), metadata)}
            files[OPTIM_FILE] = (optimizer_tensors, None)
            if ema is not None:
                files[EMA_FILE] = (cpu_copies(ema), metadata)
            digests = {
                file_name: write_tensor_file(staging / file_name, tensors, file_metadata)
                for file_name, (tensors, file_metadata) in files.items()
            }
            staging.rename(final)
            fsync_path(self.path)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        record.checkpoint_sha256 = digests
        record.optimizers = optimizer_rest

    def _read_tensors(self, record: RunRecord, file_name: str) -> dict[str, torch.Tensor]:
        if not record.checkpoint:
            raise CheckpointError(f"{self.path} has no checkpoint yet")
        path = self.checkpoint_dir(record.checkpoint) / file_name
        if not path.exists():
            raise CheckpointError(f"checkpoint file {path} is missing")
        try:
            with open_untrusted(path) as file:
                size = os.fstat(file.fileno()).st_size
                check_allocation(
                    size, f"checkpoint file {path}", "is it a gentool checkpoint?",
                    CheckpointError,
                )  # fmt: skip
                content = file.read()
        except OSError as error:
            reason = error.strerror or str(error)
            raise CheckpointError(f"cannot read checkpoint file {path}: {reason}") from None
        expected = record.checkpoint_sha256.get(file_name)
        if expected is None and record.checkpoint_sha256:  # runs of old gentools list none
            raise CheckpointError(
                f"run.json lists digests of the checkpoint's other files, but none of {path}: "
                "was run.json edited by hand?"
            )
        if expected is not None and _sha256(content) != expected:
            raise CheckpointError(
                f"checkpoint file {path} is damaged: its content changed since it was saved "
                "(SHA-256 mismatch)"
            )
        try:
            tensors = load_safetensors(content)
        except (SafetensorError, ValueError) as error:
            raise CheckpointError(f"checkpoint file {path} is damaged: {error}") from None
        non_finite = [
            name
            for name, tensor in tensors.items()
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())
        ]
        if non_finite:  # training never saves them; loaded, they would only spread
            raise CheckpointError(
                f"checkpoint file {path} holds NaN or infinity in {', '.join(non_finite[:3])}"
            )
        return tensors


def write_tensor_file(
    path: Path, tensors: Mapping[str, torch.Tensor], metadata: dict[str, str] | None
) -> str:
    """Write `tensors` as a safetensors file, fsynced; return its SHA-256.

    The bytes are made in memory and written with plain file writes, so a full disk is the
    OSError it is (safetensors' own writer reports it as its own error type), and the digest
    needs no second read.
    """
    content = serialize_safetensors(dict(tensors), metadata=metadata)
    with open(path, "wb") as file:
        file.write(content)
        file.flush()
        os.fsync(file.fileno())
    return _sha256(content)


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


def latest_run(model_name: str, root: Path = RUNS_ROOT, *, flag: str = "--run") -> RunFolder:
    """The most recently updated run of `model_name` under `root`; an error names `flag`, the
    option that names a run folder instead."""
    parent = root / model_name
    runs = [
        RunFolder(path)
        for path in parent.glob("*")
        if not path.name.startswith(".") and (path / RUN_FILE).is_file()
    ]
    if not runs:
        raise CheckpointError(
            f"no runs of {model_name!r} under {parent}: train one with `gentool train "
            f"{model_name}` or pass {flag} DIR"
        )
    return max(runs, key=lambda run: run.run_file.stat().st_mtime_ns)


def _remove(path: Path) -> None:
    """Remove a file, a link (not what it points to) or a folder, whichever `path` is."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _sha256(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()
