"""Errors that describe a problem with what the user asked for.

The CLI prints such an error's message as one line and exits with status 1, so each message says
what was wrong, with the offending value, and what to do about it.
"""


class GentoolError(Exception):
    """A user-facing error: bad input, bad options, a bad run folder."""


class ConfigError(GentoolError):
    """A model configuration value is unknown, of the wrong type, or out of range."""


class DataError(GentoolError):
    """A dataset is missing, empty, corrupt or unsuitable for the model."""


class PluginError(GentoolError):
    """A model plugin is unknown, ambiguous, broken or incompatible."""


class CapabilityError(GentoolError):
    """A model was asked for something it cannot do (sample, encode, decode, reconstruct); the
    message says what it can do instead."""


class CheckpointError(GentoolError):
    """A run folder or checkpoint is missing, corrupt, or belongs to something else."""


class TrainingError(GentoolError):
    """Training cannot go on (for example, a loss became NaN); the last good checkpoint is kept."""


class StepOverflow(TrainingError):
    """An optimizer's step computed a number past float32's range: a setting far too large (a
    learning rate of 1e38), not a fault of the plugin whose step called it."""


class Interrupted(GentoolError):
    """Training was stopped by a signal after saving a resumable checkpoint."""


def describe_exception(error: BaseException) -> str:
    """Someone else's exception in one line: its type and the first line of its message (which
    may itself fail to be made, for a hostile exception)."""
    if isinstance(error, PluginError):
        return str(error)
    try:
        text = str(error).strip()
    except Exception:
        text = ""
    first_line = text.splitlines()[0] if text else ""
    return f"{type(error).__name__}: {first_line}" if first_line else type(error).__name__
