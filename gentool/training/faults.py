"""What training says when it cannot go on: a plugin's exception, a non-finite value.

Each is one line that names the plugin (and the distribution it came from) and says what was
kept: nothing is written between checkpoints but metrics lines, which a resume trims back to the
checkpoint, so the last checkpoint is the run.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import torch

from gentool.api import ModelPlugin
from gentool.checkpoint import RunFolder
from gentool.errors import GentoolError, PluginError, TrainingError, describe_exception
from gentool.record import RunRecord
from gentool.registry import plugin_tracebacks
from gentool.run_files import checkpoint_name
from gentool.training.claim import StagedRun

FAR_ABOVE_DEFAULT = 100  # a number option this many times its default is the likely cause


def kept(run: RunFolder, record: RunRecord) -> str:
    """What a stopped training leaves, in words."""
    if isinstance(run, StagedRun):  # an --overwrite whose new run never trained: it is dropped
        return f"the run in {run.replaces} is untouched, as its replacement had not trained yet"
    if record.checkpoint == checkpoint_name(0):  # written at the start, to resume from
        return f"{run} keeps only the untrained start of the run (step 0)"
    if record.checkpoint:
        return f"the last checkpoint in {run} is kept"
    return f"no checkpoint had been written yet in {run}"


@contextmanager
def plugin_code(record: RunRecord, method: str, run: RunFolder) -> Iterator[None]:
    """Report an exception from a plugin's code as one line that names the plugin.

    GENTOOL_DEBUG=1 lets the exception through with its traceback, for the plugin's author.
    """
    try:
        yield
    except (GentoolError, KeyboardInterrupt):  # a second Ctrl-C aborts, whoever it interrupts
        raise
    except BaseException as error:  # SystemExit too: a plugin does not decide gentool's exit
        if plugin_tracebacks():
            raise
        raise PluginError(
            f"{record.plugin.origin()} raised {describe_exception(error)} in {method}; "
            f"{kept(run, record)}; GENTOOL_DEBUG=1 shows the traceback"
        ) from None


def check_finite(
    values: Mapping[str, float],
    epoch: int,
    step: int,
    run: RunFolder,
    record: RunRecord,
    advice: str,
) -> None:
    """Stop training on a logged value that is NaN or infinite (`step` counted from 1)."""
    bad = {name: value for name, value in values.items() if not math.isfinite(value)}
    if not bad:
        return
    shown = ", ".join(f"{name}={value}" for name, value in bad.items())
    raise TrainingError(
        f"non-finite values at epoch {epoch + 1}, step {step} ({shown}) from "
        f"{record.plugin.origin()}; training stopped and {kept(run, record)}; {advice}"
    )


def check_finite_weights(
    tensors: Mapping[str, torch.Tensor], run: RunFolder, record: RunRecord, advice: str
) -> None:
    """Refuse to commit a checkpoint whose weights (or optimizer state, or average) hold a NaN
    or an infinity: a resume could only fail on it. One copy from the device when all is well."""
    floating = {name: tensor for name, tensor in tensors.items() if tensor.is_floating_point()}
    if not floating:
        return
    flags = torch.stack([torch.isfinite(tensor).all() for tensor in floating.values()])
    if bool(flags.all()):
        return
    bad = [name for name, flag in zip(floating, flags.tolist(), strict=True) if not flag]
    raise TrainingError(
        f"non-finite weights after step {record.progress.global_step} ({', '.join(bad[:3])}) "
        f"from {record.plugin.origin()}, so no checkpoint was written of them; training stopped "
        f"and {kept(run, record)}; {advice}"
    )


def divergence_advice(plugin: ModelPlugin, config: object) -> str:
    """What to try when training diverges: a lower learning rate, or bringing back an option set
    far above the plugin's default (a learning rate, a loss weight), when one is. In a new run:
    a resume keeps the settings that diverged."""
    defaults = plugin.parse_config({})
    for field in plugin.config_fields():
        chosen, default = getattr(config, field.name, None), getattr(defaults, field.name, None)
        if (
            isinstance(chosen, float)
            and isinstance(default, float)
            and default > 0
            and chosen > FAR_ABOVE_DEFAULT * default
        ):
            flag = "--lr" if field.name == "lr" else f"-o {field.name}=..."
            return (
                f"{field.name} {chosen:g} is far above {plugin.name}'s default {default:g}: "
                f"train a new run with a lower {flag}"
            )
    return "train a new run with a lower learning rate"
