"""run.json as typed parts: what was trained, on what, how, how far, and its checkpoint.

`RunRecord.from_json` is where a run folder's description is checked before anything uses it: a
hand-edited or damaged run.json is refused with the field at fault, never half-trusted.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from gentool import __version__, rng
from gentool.api import DataSpec
from gentool.run_files import CHECKPOINT_FILES, CHECKPOINT_NAME, checkpoint_name

RUN_FORMAT = 1  # bump when run.json changes incompatibly; older gentools then refuse the run
MAX_SEED = 2**63 - 1  # torch.manual_seed takes seeds below 2⁶⁴; JSON integers are safest below 2⁶³
_SHA256_HEX = 64


class FutureRunFormat(ValueError):
    """run.json was written by a newer gentool, in a format this one cannot read."""


@dataclass(frozen=True)
class PluginInfo:
    """The plugin that trained the run, as the registry found it."""

    name: str
    distribution: str
    version: str
    api_version: int

    def origin(self) -> str:
        return f"plugin {self.name!r} (from {self.distribution} {self.version})"


@dataclass(frozen=True)
class DataInfo:
    """The data the run trains on: where it came from and what it decoded to."""

    source: str  # what the user named: a path or "builtin:NAME"
    count: int
    fingerprint: str  # identifies the decoded content; a resume checks it
    spec: DataSpec
    limit: int | None = None


@dataclass
class TrainingSettings:
    """How the run trains; fixed for its lifetime except `epochs`, which a resume may extend,
    and `loggers`, which a resume keeps unless --log names others."""

    seed: int
    batch_size: int  # the global batch, whatever the number of processes
    epochs: int
    device: str
    ema: float | None = None  # decay of the moving average of the weights, when kept
    loggers: list[str] = field(default_factory=list)  # --log's names (gentool.loggers)
    augment: list[str] = field(default_factory=list)  # --augment's names (data.AUGMENTATIONS)


@dataclass
class Progress:
    """How far training got: the next batch to train is `step_in_epoch` of `epoch` (from 0)."""

    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0


@dataclass
class RunRecord:
    """The contents of run.json."""

    plugin: PluginInfo
    config: dict[str, Any]
    data: DataInfo
    training: TrainingSettings
    progress: Progress = field(default_factory=Progress)
    checkpoint: str | None = None
    checkpoint_sha256: dict[str, str] = field(default_factory=dict)  # file name → hex digest
    optimizers: dict[str, Any] = field(default_factory=dict)  # non-tensor optimizer state
    rng: dict[str, Any] = field(default_factory=dict)  # generator states, per rank when several
    gentool_version: str = __version__
    format: int = RUN_FORMAT
    created: str = field(default_factory=lambda: now())
    updated: str = field(default_factory=lambda: now())

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, allow_nan=False) + "\n"

    @classmethod
    def from_json(cls, text: str) -> RunRecord:
        """Parse and check run.json's text; ValueError names the first field at fault."""
        raw = json.loads(text)
        if not isinstance(raw, dict):
            raise ValueError("not a JSON object")
        _known_fields(raw, "run.json", cls)
        run_format = raw.get("format")
        if not _is_int(run_format) or run_format < 1:
            raise ValueError("'format' must be a positive integer")
        if run_format > RUN_FORMAT:
            raise FutureRunFormat(
                f"written by gentool {raw.get('gentool_version', '?')} in run format "
                f"{run_format}; this gentool {__version__} reads up to {RUN_FORMAT}"
            )
        progress = _progress(_object(raw, "progress"))
        checkpoint = _checkpoint(raw.get("checkpoint"))
        if checkpoint is not None and checkpoint != checkpoint_name(progress.global_step):
            raise ValueError(
                f"'checkpoint' {checkpoint} is not the checkpoint of its progress' global step "
                f"{progress.global_step}"
            )
        return cls(
            plugin=_plugin(_object(raw, "plugin")),
            config=_object(raw, "config"),
            data=_data(_object(raw, "data")),
            training=_training(_object(raw, "training")),
            progress=progress,
            checkpoint=checkpoint,
            checkpoint_sha256=_digests(_object(raw, "checkpoint_sha256")),
            optimizers=_optimizers(_object(raw, "optimizers")),
            rng=_rng_states(_object(raw, "rng")),
            gentool_version=_string(raw, "gentool_version", "run.json"),
            format=run_format,
            created=_string(raw, "created", "run.json"),
            updated=_string(raw, "updated", "run.json"),
        )


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


# --- checking untrusted JSON ----------------------------------------------------------------


def _object(raw: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = raw.get(key)
    if not isinstance(value, dict):
        raise ValueError(f"{key!r} is not a JSON object")
    return value


def _known_fields(raw: Mapping[str, Any], where: str, kind: type) -> None:
    """Refuse a field the dataclass `kind` does not have: a hand edit gone wrong, not data."""
    known = {item.name for item in fields(kind)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValueError(f"{where!r} has an unknown field {unknown[0]!r}")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _integer(raw: Mapping[str, Any], key: str, where: str, *, least: int = 0) -> int:
    value = raw.get(key)
    if not _is_int(value) or not least <= value <= MAX_SEED:
        raise ValueError(f"'{where}.{key}' must be an integer ≥ {least}, got {value!r}")
    return value


def _string(raw: Mapping[str, Any], key: str, where: str) -> str:
    value = raw.get(key)
    if not isinstance(value, str):
        raise ValueError(f"'{where}.{key}' must be a string, got {value!r}")
    return value


def _plugin(raw: Mapping[str, Any]) -> PluginInfo:
    _known_fields(raw, "plugin", PluginInfo)
    return PluginInfo(
        name=_string(raw, "name", "plugin"),
        distribution=_string(raw, "distribution", "plugin"),
        version=_string(raw, "version", "plugin"),
        api_version=_integer(raw, "api_version", "plugin", least=1),
    )


def _data(raw: Mapping[str, Any]) -> DataInfo:
    _known_fields(raw, "data", DataInfo)
    limit = raw.get("limit")
    spec = _object(raw, "spec")
    _known_fields(spec, "data.spec", DataSpec)
    names = spec.get("class_names", [])
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise ValueError("'data.spec.class_names' must be a list of strings")
    return DataInfo(
        source=_string(raw, "source", "data"),
        count=_integer(raw, "count", "data", least=1),
        fingerprint=_string(raw, "fingerprint", "data"),
        spec=DataSpec(
            channels=_integer(spec, "channels", "data.spec", least=1),
            height=_integer(spec, "height", "data.spec", least=1),
            width=_integer(spec, "width", "data.spec", least=1),
            class_names=tuple(names),
        ),
        limit=None if limit is None else _integer(raw, "limit", "data", least=1),
    )


def _training(raw: Mapping[str, Any]) -> TrainingSettings:
    _known_fields(raw, "training", TrainingSettings)
    ema = raw.get("ema")
    if ema is not None and not (isinstance(ema, float) and math.isfinite(ema) and 0.0 < ema < 1.0):
        raise ValueError(f"'training.ema' must be a number between 0 and 1 or null, got {ema!r}")
    loggers = raw.get("loggers", [])
    if not isinstance(loggers, list) or not all(isinstance(name, str) and name for name in loggers):
        raise ValueError(f"'training.loggers' must be a list of logger names, got {loggers!r}")
    augment = raw.get("augment", [])
    if not isinstance(augment, list) or not all(isinstance(name, str) for name in augment):
        raise ValueError(f"'training.augment' must be a list of augmentations, got {augment!r}")
    return TrainingSettings(
        seed=_integer(raw, "seed", "training"),
        batch_size=_integer(raw, "batch_size", "training", least=1),
        epochs=_integer(raw, "epochs", "training", least=1),
        device=_string(raw, "device", "training"),
        ema=ema,
        loggers=loggers,
        augment=augment,
    )


def _progress(raw: Mapping[str, Any]) -> Progress:
    _known_fields(raw, "progress", Progress)
    return Progress(
        epoch=_integer(raw, "epoch", "progress"),
        step_in_epoch=_integer(raw, "step_in_epoch", "progress"),
        global_step=_integer(raw, "global_step", "progress"),
    )


def _checkpoint(value: object) -> str | None:
    if value is not None and not (isinstance(value, str) and CHECKPOINT_NAME.fullmatch(value)):
        raise ValueError("'checkpoint' must be a name like checkpoint-00000450, not a path")
    return value


def _digests(raw: Mapping[str, Any]) -> dict[str, str]:
    for name, digest in raw.items():
        if name not in CHECKPOINT_FILES:
            raise ValueError(f"'checkpoint_sha256' names {name!r}, not a checkpoint file")
        if not (isinstance(digest, str) and len(digest) == _SHA256_HEX and _is_hex(digest)):
            raise ValueError(f"'checkpoint_sha256.{name}' is not a SHA-256 digest")
    return dict(raw)


def _is_hex(text: str) -> bool:
    return all(character in "0123456789abcdef" for character in text)


def _optimizers(raw: Mapping[str, Any]) -> dict[str, Any]:
    for name, state in raw.items():
        if not isinstance(state, dict) or not isinstance(state.get("param_groups"), list):
            raise ValueError(f"'optimizers.{name}' is not an optimizer's state")
        if not isinstance(state.get("state", {}), dict):
            raise ValueError(f"'optimizers.{name}.state' is not a JSON object")
    return dict(raw)


def _rng_states(raw: Mapping[str, Any]) -> dict[str, Any]:
    rng.check_state(raw, extra=("ranks",))
    ranks = raw.get("ranks")
    if ranks is not None:
        if not isinstance(ranks, list) or not ranks:
            raise ValueError("'rng.ranks' must be a list of generator states")
        for state in ranks:
            rng.check_state(state)
    return dict(raw)
