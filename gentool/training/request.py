"""What a training is asked to do, and every rule such a request must keep.

`TrainRequest` mirrors `gentool train`'s options one for one, so that a Python caller and the
command line are held to the same rules, and an error names the option at fault the way the
command line spells it. `plan_training` checks a request before anything is read or written
and returns the settled `TrainingPlan`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gentool.api import ModelPlugin
from gentool.config import coerce_values, toml_load_file
from gentool.errors import ConfigError, GentoolError
from gentool.evaluate import SAMPLING_METRICS, EvalSettings, parse_metrics
from gentool.features import FEATURE_NAMES, load_extractor
from gentool.kernels.dispatch import BACKEND_ENV, check_backend_name
from gentool.record import MAX_SEED
from gentool.registry import PluginEntry
from gentool.training.distributed import Ranks, shard_size
from gentool.training.ema import check_decay
from gentool.training.monitor import TRAINING_EVAL_IMAGES, EvalSchedule
from gentool.training.speed import Acceleration
from gentool.training.tracking import LoggerChoice, load_loggers, parse_logger_names

DEFAULT_LOG_EVERY = 50  # steps whose logged values wait on the device before one copy to the CPU


@dataclass(frozen=True)
class TrainRequest:
    """What `gentool train` was asked; None means "the default" (or, on resume, "the run's").

    Each field is the command line option of the same name: `config_values` is `-o KEY=VALUE`,
    `config_file` is `--config`, `acceleration` gathers --amp, --compile, --channels-last,
    --sync-bn and --kernels, `eval_*` are the --eval-* options, and `log` is --log.
    """

    entry: PluginEntry
    config_values: Mapping[str, Any] = field(default_factory=dict)
    config_file: Path | None = None
    lr: float | str | None = None  # a string as -o values are, coerced and checked alike
    data: str | None = None
    limit: int | None = None
    epochs: int | None = None
    batch_size: int | None = None
    seed: int | None = None
    device: str = "auto"
    run_dir: Path | None = None
    resume: bool = False
    overwrite: bool = False  # replace the run in run_dir; never anything that is not a run
    acceleration: Acceleration | None = None  # None: plain float32 eager steps
    ema: float | None = None  # decay of a moving average of the weights; on resume, the run's
    eval_every: int | None = None
    eval_n: int | None = None
    eval_metrics: str | Sequence[str] | None = None
    eval_features: str | None = None
    log_every: int = DEFAULT_LOG_EVERY  # steps between copies of the logged values to the CPU
    log: str | Sequence[str] | None = None  # None: none for a new run, a resumed run's own
    augment: str | Sequence[str] | None = None  # None: none for a new run, a resumed run's own
    verify_data: bool = False  # read every data file and cached pixel again


@dataclass(frozen=True)
class TrainingPlan:
    """A request that keeps every rule, with its defaults settled."""

    request: TrainRequest
    plugin: ModelPlugin
    config_values: dict[str, Any]  # the new run's config fields; empty on resume
    acceleration: Acceleration  # with `kernels` settled
    eval_schedule: EvalSchedule | None
    loggers: LoggerChoice | None  # those --log named, imported; None when it was not given
    augment: tuple[str, ...]  # a new run's augmentations (a resumed run keeps its own)


def plan_training(request: TrainRequest, *, world_size: int | None = None) -> TrainingPlan:
    """Check `request` against every rule of a training, before anything is read or written.

    `world_size` is the number of processes the run will have (`--nproc`), when that is known
    before they start; under torchrun each process checks its own.
    """
    plugin = request.entry.plugin
    assert plugin is not None  # the registry resolves loaded plugins only
    _check_run_options(request)
    _check_numbers(request)
    acceleration = _settled_acceleration(request.acceleration or Acceleration())
    config_values = {} if request.resume else merged_config(request, plugin)
    if world_size is not None and not request.resume:
        shard_size(request.batch_size or plugin.default_batch_size, Ranks(world_size=world_size))
    loggers = None if request.log is None else load_loggers(parse_logger_names(request.log))
    return TrainingPlan(
        request, plugin, config_values, acceleration, eval_schedule(request, plugin), loggers,
        augment=parse_augmentations(request.augment),
    )  # fmt: skip


def parse_augmentations(value: str | Sequence[str] | None) -> tuple[str, ...]:
    """--augment's comma-separated names, each one gentool has."""
    from gentool.data.batches import AUGMENTATIONS

    names = value.split(",") if isinstance(value, str) else list(value or ())
    names = [name.strip() for name in names if name.strip() and name.strip() != "none"]
    for name in names:
        if name not in AUGMENTATIONS:
            raise ConfigError(
                f"unknown augmentation {name!r}: --augment takes {', '.join(AUGMENTATIONS)} "
                "(comma-separated), or none"
            )
    return tuple(dict.fromkeys(names))


def _check_run_options(request: TrainRequest) -> None:
    if request.overwrite and request.resume:
        raise ConfigError(
            "--overwrite and --resume contradict each other: --resume continues the run in "
            "--run-dir, --overwrite replaces it; pass one"
        )
    if request.overwrite and request.run_dir is None:
        raise ConfigError("--overwrite needs --run-dir, the run to replace")
    if request.resume:
        changed = {
            "--option": request.config_values,
            "--config": request.config_file,
            "--lr": request.lr,
            "--batch-size": request.batch_size,
            "--seed": request.seed,
            "--limit": request.limit,
            "--ema": request.ema,
        }
        given = [flag for flag, value in changed.items() if value not in (None, {}, [])]
        if given:
            raise ConfigError(
                f"{', '.join(given)} cannot be given with --resume: a resumed run trains on "
                "with the settings its run.json records; leave them out, or start a new run "
                "to train with others"
            )


def _check_numbers(request: TrainRequest) -> None:
    """The numbers of a request, which the command line bounds and a Python caller may not."""
    at_least_one = {
        "--epochs": request.epochs,
        "--batch-size": request.batch_size,
        "--limit": request.limit,
        "--eval-every": request.eval_every,
        "--log-every": request.log_every,
    }
    for flag, value in at_least_one.items():
        if value is not None and (isinstance(value, bool) or value < 1):
            raise ConfigError(f"{flag} must be at least 1, got {value}")
        if value is not None and value > MAX_SEED:  # run.json holds int64, as for the seed
            raise ConfigError(f"{flag} must be at most {MAX_SEED}, got {value}")
    if request.seed is not None and not 0 <= request.seed <= MAX_SEED:
        raise ConfigError(f"--seed must be between 0 and {MAX_SEED}, got {request.seed}")
    if request.ema is not None:
        check_decay(request.ema)


def _settled_acceleration(acceleration: Acceleration) -> Acceleration:
    """`acceleration` with its kernel backend named: --kernels, else $GENTOOL_KERNELS, else auto."""
    if acceleration.kernels is not None:
        kernels = check_backend_name(acceleration.kernels)
    elif os.environ.get(BACKEND_ENV, "").strip():
        kernels = check_backend_name(os.environ[BACKEND_ENV], given_as=f"{BACKEND_ENV}=")
    else:
        kernels = "auto"
    if kernels == "triton" and (acceleration.compile or acceleration.sync_bn):
        flag = "--compile" if acceleration.compile else "--sync-bn"
        raise ConfigError(
            f"--kernels triton and {flag} cannot go together: {flag} makes the fused blocks run "
            "as their plain layers, so no Triton kernel would run; drop one of them"
        )
    return dataclasses.replace(acceleration, kernels=kernels)


def merged_config(request: TrainRequest, plugin: ModelPlugin) -> dict[str, Any]:
    """Config values from the TOML file, then `config_values`, then `lr`, later ones winning;
    checked against the plugin's schema now, before any data is read."""
    from_file: dict[str, Any] = {}
    if request.config_file is not None:
        from_file = toml_load_file(request.config_file)
        overridden = {*request.config_values, *(["lr"] if request.lr is not None else [])}
        kept = {key: value for key, value in from_file.items() if key not in overridden}
        try:  # a wrong key or value in the file is named at the file
            coerce_values(plugin.Config, kept, owner=plugin.name, typed=True)
        except ConfigError as error:
            raise ConfigError(f"--config {request.config_file}: {error}") from None
    values = {**from_file, **request.config_values}
    if request.lr is not None:
        if "lr" not in {field.name for field in plugin.config_fields()}:
            raise ConfigError(f"{plugin.name} has no learning-rate option 'lr'; see gentool info")
        if "lr" in request.config_values:
            raise ConfigError("--lr and -o lr= both set the learning rate: give one of them")
        values["lr"] = request.lr
    try:
        plugin.parse_config(values)
    except ConfigError as error:
        if from_file and _same_failure(plugin, from_file, error):  # the file's values clash
            raise ConfigError(f"--config {request.config_file}: {error}") from None
        raise
    return values


def _same_failure(plugin: ModelPlugin, values: dict[str, Any], error: ConfigError) -> bool:
    """Whether `values` alone fail the plugin's checks as the merged config did, so that the
    failure is theirs and not one that -o or --lr brought in."""
    try:
        plugin.parse_config(values)
    except ConfigError as alone:
        return str(alone) == str(error)
    return False


def eval_schedule(request: TrainRequest, plugin: ModelPlugin) -> EvalSchedule | None:
    """What --eval-every and its options ask, for `plugin` as its capabilities stand."""
    options = {
        "--eval-n": request.eval_n,
        "--eval-metrics": request.eval_metrics,
        "--eval-features": request.eval_features,
    }
    if request.eval_every is None:
        given = [flag for flag, value in options.items() if value]
        if given:
            raise ConfigError(f"{', '.join(given)} set how --eval-every N evaluates: add it")
        return None
    features = request.eval_features or "builtin"
    if features not in FEATURE_NAMES:
        raise ConfigError(f"unknown --eval-features {features!r}: use {' or '.join(FEATURE_NAMES)}")
    metrics = request.eval_metrics
    if metrics is not None and not isinstance(metrics, str):
        metrics = ",".join(metrics)
    settings = EvalSettings(
        metrics=parse_metrics(metrics, plugin, "--eval-metrics"),
        n=TRAINING_EVAL_IMAGES if request.eval_n is None else request.eval_n,
        features=features,
        chosen=metrics is not None,
    )
    if settings.n < 10:
        raise ConfigError(f"--eval-n must be at least 10, got {settings.n}")
    if SAMPLING_METRICS & set(settings.metrics):
        load_extractor(features)  # a missing package or weights fails now, not after an epoch
    return EvalSchedule(request.eval_every, settings)


def check_sync_bn(acceleration: Acceleration, ranks: Ranks, device_type: str) -> None:
    """--sync-bn with several processes needs CUDA: PyTorch's SyncBatchNorm runs there only."""
    if acceleration.sync_bn and ranks.distributed and device_type != "cuda":
        raise GentoolError(
            "--sync-bn needs CUDA devices (PyTorch's SyncBatchNorm does not run on the CPU): "
            "drop --sync-bn, or train on GPUs"
        )
