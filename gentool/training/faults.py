"""What training says when it cannot go on: a plugin's exception, a non-finite value.

Each is one line that names the plugin (and the distribution it came from) and says what was
kept: nothing is written between checkpoints but metrics lines, which a resume trims back to the
checkpoint, so the last checkpoint is the run.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from gentool.checkpoint import RunFolder
from gentool.errors import GentoolError, PluginError, TrainingError
from gentool.record import RunRecord
from gentool.registry import describe_exception, strict_plugins


def kept(run: RunFolder, record: RunRecord) -> str:
    """What a stopped training leaves, in words."""
    if record.checkpoint:
        return f"the last checkpoint in {run} is kept"
    return f"no checkpoint had been written yet in {run}"


@contextmanager
def plugin_code(record: RunRecord, method: str, run: RunFolder) -> Iterator[None]:
    """Report an exception from a plugin's code as one line that names the plugin.

    GENTOOL_STRICT_PLUGINS=1 lets the exception through with its traceback, for the plugin's
    author.
    """
    try:
        yield
    except GentoolError:
        raise
    except Exception as error:
        if strict_plugins():
            raise
        raise PluginError(
            f"{record.plugin.origin()} raised {describe_exception(error)} in {method}; "
            f"{kept(run, record)}; GENTOOL_STRICT_PLUGINS=1 shows the traceback"
        ) from None


def check_finite(
    values: Mapping[str, float], epoch: int, step: int, run: RunFolder, record: RunRecord
) -> None:
    """Stop training on a logged value that is NaN or infinite (`step` counted from 1)."""
    bad = {name: value for name, value in values.items() if not math.isfinite(value)}
    if not bad:
        return
    shown = ", ".join(f"{name}={value}" for name, value in bad.items())
    raise TrainingError(
        f"non-finite values at epoch {epoch + 1}, step {step} ({shown}) from "
        f"{record.plugin.origin()}; training stopped and {kept(run, record)}; "
        "try a lower learning rate"
    )
