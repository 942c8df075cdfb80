"""Finds model plugins through the ``gentool.models`` entry point group.

Built-in models register exactly as third-party ones do. A plugin that fails to import, has an
unsupported `api_version`, or is not a `ModelPlugin` is kept as an entry with its error: `gentool
list` shows it, and it fails a command only when that command asks for it (set
``GENTOOL_STRICT_PLUGINS=1`` to raise at discovery instead). When two distributions provide the
same name, each stays reachable as ``distribution:name`` and the bare name is refused as ambiguous.

``GENTOOL_LOAD_PLUGINS=a,b`` loads only the third-party plugins named there (by model or
distribution name); set but empty, it loads the built-in models alone. The variable exists to
rule a misbehaving plugin out without uninstalling it.

A plugin's import is untrusted code too: whatever it raises (SystemExit included) breaks that
plugin only; an import still running after ``GENTOOL_PLUGIN_TIMEOUT`` seconds (10) is left
behind and the plugin listed as broken; and what it prints goes to stderr, so that `gentool list
--json` stays JSON.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import sys
import threading
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import Protocol, TypeVar

from gentool.api import SUPPORTED_API_VERSIONS, ModelPlugin
from gentool.errors import PluginError, describe_exception

ENTRY_POINT_GROUP = "gentool.models"
STRICT_ENV = "GENTOOL_STRICT_PLUGINS"
LOAD_ENV = "GENTOOL_LOAD_PLUGINS"
TIMEOUT_ENV = "GENTOOL_PLUGIN_TIMEOUT"
DEBUG_ENV = "GENTOOL_DEBUG"
DEFAULT_TIMEOUT_SECONDS = 10.0
MAX_TIMEOUT_SECONDS = 86_400.0  # threading's waits overflow far beyond a day
BUILT_IN_DISTRIBUTION = "gentool"


@dataclass(frozen=True)
class PluginEntry:
    """One entry point of the group, loaded or not."""

    name: str
    distribution: str
    version: str
    target: str  # "module:attribute", as the entry point declares it
    plugin: ModelPlugin | None
    error: str | None

    @property
    def qualified_name(self) -> str:
        return f"{self.distribution}:{self.name}"

    @property
    def ok(self) -> bool:
        return self.error is None


def discover() -> list[PluginEntry]:
    """Every plugin entry point visible to this interpreter, sorted by name then distribution."""
    strict = strict_plugins()
    allowed = _allowed_third_party()
    seconds = import_timeout()
    entries: dict[tuple[str, str], PluginEntry] = {}
    for entry_point in metadata.entry_points(group=ENTRY_POINT_GROUP):
        distribution = entry_point.dist
        dist_name = normalize_distribution(distribution.name) if distribution else "unknown"
        if (
            allowed is not None
            and dist_name != BUILT_IN_DISTRIBUTION
            and not {normalize_distribution(entry_point.name), dist_name} & allowed
        ):
            continue
        key = (dist_name, entry_point.name)
        # A source checkout can expose the same distribution twice (egg-info beside dist-info).
        if key not in entries:
            version = distribution.version if distribution else "?"
            entries[key] = _load(entry_point, dist_name, version, strict, seconds)
    return sorted(entries.values(), key=lambda entry: (entry.name, entry.distribution))


class Named(Protocol):
    name: str
    distribution: str


NamedEntry = TypeVar("NamedEntry", bound=Named)


def entries_named(reference: str, entries: Sequence[NamedEntry]) -> list[NamedEntry]:
    """The entries (models or loggers) that "name" or "distribution:name" names."""
    distribution, _, name = reference.rpartition(":")
    return [
        entry
        for entry in entries
        if entry.name == name
        and (not distribution or entry.distribution == normalize_distribution(distribution))
    ]


def resolve(reference: str, entries: list[PluginEntry] | None = None) -> PluginEntry:
    """The loaded plugin for "name" or "distribution:name"; a PluginError says why not."""
    entries = discover() if entries is None else entries
    name = reference.rpartition(":")[2]
    matches = entries_named(reference, entries)
    if not matches:
        names = sorted({entry.name for entry in entries})
        known = ", ".join(names) if names else "none are installed"
        raise PluginError(f"unknown model {reference!r}; available models: {known}")
    working = [entry for entry in matches if entry.ok]
    if len(matches) > 1 and len(working) == 1:  # a broken namesake does not hide a working one
        for broken in (entry for entry in matches if not entry.ok):
            warnings.warn(
                f"another plugin named {name!r}, from {broken.distribution} {broken.version}, "
                f"is broken ({broken.error}); using {working[0].qualified_name}",
                stacklevel=2,
            )
        matches = working
    if len(matches) > 1:
        choices = " or ".join(entry.qualified_name for entry in matches)
        raise PluginError(f"model name {name!r} is ambiguous: use {choices}")
    entry = matches[0]
    if not entry.ok:
        raise PluginError(
            f"model {entry.name!r} from {entry.distribution} {entry.version} is broken: "
            f"{entry.error}"
        )
    return entry


def clashing_names(entries: list[PluginEntry]) -> set[str]:
    """Names that more than one distribution provides."""
    seen: dict[str, int] = {}
    for entry in entries:
        seen[entry.name] = seen.get(entry.name, 0) + 1
    return {name for name, count in seen.items() if count > 1}


def _allowed_third_party() -> set[str] | None:
    """The third-party names GENTOOL_LOAD_PLUGINS admits, or None when it is not set."""
    if LOAD_ENV not in os.environ:
        return None
    names = os.environ[LOAD_ENV].split(",")
    return {normalize_distribution(name.strip()) for name in names if name.strip()}


def _load(
    entry_point: metadata.EntryPoint, dist_name: str, version: str, strict: bool, seconds: float
) -> PluginEntry:
    try:
        plugin = _checked(_import(entry_point, seconds), entry_point.name, dist_name)
        error = None
    except (Exception, SystemExit) as exc:  # a broken plugin must not break other commands
        if strict:
            raise
        plugin = None
        error = describe_exception(exc)
    return PluginEntry(entry_point.name, dist_name, version, entry_point.value, plugin, error)


def _import(entry_point: metadata.EntryPoint, seconds: float) -> object:
    """`entry_point.load()`, given at most `seconds`; what it prints goes to stderr."""
    outcome: dict[str, object] = {}

    def load() -> None:
        try:
            outcome["value"] = entry_point.load()
        except BaseException as error:  # SystemExit too: only this plugin may fail of it
            outcome["error"] = error

    worker = threading.Thread(target=load, name=f"import {entry_point.value}", daemon=True)
    with _stdout_to_stderr():
        worker.start()
        worker.join(seconds)
    if worker.is_alive():
        raise PluginError(
            f"importing {entry_point.value} took longer than {seconds:g} s and was left behind "
            f"(set {TIMEOUT_ENV} to wait longer, or {LOAD_ENV} to leave it out)"
        )
    error = outcome.get("error")
    if isinstance(error, (Exception, SystemExit)):
        raise error
    if isinstance(error, BaseException):  # KeyboardInterrupt, GeneratorExit, its own kinds
        raise PluginError(f"its import raised {describe_exception(error)}")
    return outcome["value"]


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Send what is written to standard output, by Python or straight to its descriptor, to
    standard error meanwhile: a plugin's greeting must not corrupt `gentool list --json`."""
    try:
        sys.stdout.flush()
        saved = os.dup(1)
    except (OSError, ValueError):  # no standard output to protect
        with contextlib.redirect_stdout(sys.stderr):
            yield
        return
    try:
        os.dup2(2, 1)
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def import_timeout() -> float:
    """GENTOOL_PLUGIN_TIMEOUT in seconds; a value that is no such number is an error."""
    text = os.environ.get(TIMEOUT_ENV, "").strip()
    if not text:
        return DEFAULT_TIMEOUT_SECONDS
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not 0 < seconds <= MAX_TIMEOUT_SECONDS:
        raise PluginError(
            f"{TIMEOUT_ENV}={text!r} is not a number of seconds above 0 and up to "
            f"{MAX_TIMEOUT_SECONDS:g}"
        )
    return seconds


def _checked(loaded: object, name: str, dist_name: str) -> ModelPlugin:
    if not isinstance(loaded, ModelPlugin):
        raise PluginError(f"entry point resolves to {type(loaded).__name__}, not a ModelPlugin")
    if loaded.api_version not in SUPPORTED_API_VERSIONS:
        supported = ", ".join(str(version) for version in sorted(SUPPORTED_API_VERSIONS))
        newer = loaded.api_version > max(SUPPORTED_API_VERSIONS)
        upgrade = "upgrade gentool" if newer else f"upgrade {dist_name}"
        raise PluginError(
            f"written for plugin API v{loaded.api_version}, this gentool supports v{supported}: "
            f"{upgrade}"
        )
    if loaded.name != name:
        raise PluginError(f"entry point {name!r} resolves to a plugin named {loaded.name!r}")
    loaded.config_fields()  # a malformed schema is a broken plugin, found now rather than later
    low, high = _value_range(loaded.value_range)
    if not low < high:
        raise PluginError(f"value_range {loaded.value_range!r} must be two numbers, low < high")
    if not isinstance(loaded.latent_distribution, str | None):
        raise PluginError(
            f"latent_distribution {loaded.latent_distribution!r} must be words, such as "
            "'standard normal', or None"
        )
    return loaded


def _value_range(value_range: object) -> tuple[float, float]:
    try:
        low, high = value_range  # type: ignore[misc]
        numbers = (float(low), float(high))
    except (TypeError, ValueError):
        raise PluginError(f"value_range {value_range!r} must be two numbers, low < high") from None
    if not all(math.isfinite(number) for number in numbers):
        raise PluginError(f"value_range {value_range!r} must be two finite numbers")
    return numbers


def strict_plugins() -> bool:
    """Whether GENTOOL_STRICT_PLUGINS asks for a plugin's own exceptions and tracebacks."""
    return os.environ.get(STRICT_ENV, "").lower() in {"1", "true", "yes"}


def plugin_tracebacks() -> bool:
    """Whether a plugin's exception from one of its methods goes through whole, traceback and
    all: GENTOOL_DEBUG=1, the switch a user is told of, or GENTOOL_STRICT_PLUGINS=1."""
    return strict_plugins() or os.environ.get(DEBUG_ENV, "").lower() in {"1", "true", "yes"}


def plugin_origin(plugin: ModelPlugin) -> str:
    """ "plugin 'NAME' (from DISTRIBUTION VERSION)" for an installed plugin, else its name: how
    a message names the plugin at fault."""
    for entry in discover():  # the same plugin, or its copy for a config (for_config)
        if entry.plugin is not None and (entry.plugin.name, entry.plugin.Config) == (
            plugin.name,
            plugin.Config,
        ):
            return f"plugin {plugin.name!r} (from {entry.distribution} {entry.version})"
    return f"plugin {plugin.name!r}"


def normalize_distribution(distribution_name: str) -> str:
    """A distribution name as packaging compares them: lower case, runs of -_. as one -."""
    return re.sub(r"[-_.]+", "-", distribution_name).lower()
