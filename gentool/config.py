"""Typed model configuration: dataclasses whose fields carry a default, a description and a range.

A plugin declares its configuration as a frozen dataclass built with `option()`:

    @dataclass(frozen=True)
    class Config:
        latent_dim: int = option(100, "length of the noise vector z", min=1)
        loss: Literal["bce", "mse"] = option("bce", "reconstruction loss")

`parse_config` turns user input (strings from `-o key=value`, values from a TOML file, values read
back from a run's JSON) into an instance: unknown keys, wrong types and out-of-range values are
refused with a message naming the option and what it accepts; nothing is silently repaired.
Supported field types: bool, int, float, str, `Literal[...]`, `tuple[int, ...]` (and the other
scalar types) and `X | None`.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import re
import struct
import sys
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from gentool.errors import ConfigError, PluginError, describe_exception
from gentool.limits import read_untrusted

ConfigT = TypeVar("ConfigT")

MAX_CONFIG_BYTES = 2**20  # a model config is a few lines
_TRUE = {"true", "yes", "on", "1"}
_PLAIN_INTEGER = re.compile(r"[+-]?[0-9]+")
_FALSE = {"false", "no", "off", "0"}


def option(
    default: Any,
    help: str,
    *,
    min: float | None = None,
    max: float | None = None,
) -> Any:
    """A configuration field: its default, a one-line description and an inclusive range."""
    if isinstance(default, list):
        raise TypeError("use a tuple, not a list, as an option's default: configs are immutable")
    return dataclasses.field(default=default, metadata={"help": help, "min": min, "max": max})


@dataclass(frozen=True)
class ConfigField:
    """One field of a configuration schema, as `gentool info` shows it."""

    name: str
    type: Any
    default: Any
    help: str
    min: float | None
    max: float | None

    @property
    def type_name(self) -> str:
        return _type_name(self.type)

    @property
    def accepted(self) -> str:
        """What values the field accepts, in words (for help and error messages)."""
        base, optional = _unwrap_optional(self.type)
        name = _type_name(base)
        item = typing.get_args(base)[0] if typing.get_origin(base) is tuple else None
        if typing.get_origin(base) is Literal:
            text = "one of " + ", ".join(str(choice) for choice in typing.get_args(base))
        elif typing.get_origin(item) is Literal:
            choices = ", ".join(str(choice) for choice in typing.get_args(item))
            text = f"comma-separated, any of {choices} (or empty for none)"
        elif self.min is not None and self.max is not None:
            text = f"{name} in [{self.min}, {self.max}]"
        elif self.min is not None:
            text = f"{name} >= {self.min}"
        elif self.max is not None:
            text = f"{name} <= {self.max}"
        else:
            text = name
        return text + (" or none" if optional else "")


def config_fields(config_class: type) -> tuple[ConfigField, ...]:
    """The fields of a configuration dataclass, in declaration order."""
    if not (isinstance(config_class, type) and dataclasses.is_dataclass(config_class)):
        raise TypeError(f"a model config must be a dataclass type, got {config_class!r}")
    hints = typing.get_type_hints(config_class)
    fields = []
    for field in dataclasses.fields(config_class):
        if field.default is dataclasses.MISSING:
            raise TypeError(f"config field {config_class.__name__}.{field.name} needs a default")
        fields.append(
            ConfigField(
                name=field.name,
                type=hints[field.name],
                default=field.default,
                help=field.metadata.get("help", ""),
                min=field.metadata.get("min"),
                max=field.metadata.get("max"),
            )
        )
    return tuple(fields)


def parse_config(config_class: type[ConfigT], values: Mapping[str, Any], *, owner: str) -> ConfigT:
    """Validate `values` against the schema and build the config; `owner` names it in errors."""
    parsed = coerce_values(config_class, values, owner=owner)
    try:
        return config_class(**parsed)
    except (ValueError, TypeError) as error:
        raise ConfigError(f"invalid config for {owner}: {error}") from None
    except KeyboardInterrupt:
        raise
    except BaseException as error:  # the plugin's own checks failing otherwise are its failure
        raise PluginError(
            f"the config of {owner} raised {describe_exception(error)} while checking it"
        ) from None


def coerce_values(
    config_class: type, values: Mapping[str, Any], *, owner: str, typed: bool = False
) -> dict[str, Any]:
    """`values` as their options' types, each key and value checked on its own: what can be
    blamed on one value before the config's checks that weigh several together. `typed` values
    come from a format with types of its own (TOML), where text is taken only for an option of
    text: `lr = "0.001"` is a slip there, where `-o lr=0.001` is the only way to write it."""
    fields = {field.name: field for field in config_fields(config_class)}
    parsed = {}
    for key, value in values.items():
        if key not in fields:
            raise ConfigError(_unknown_key_message(key, fields, owner))
        field = fields[key]
        if typed and _quoted_number(field.type, value):
            raise ConfigError(
                f"option {key!r} of {owner} must be {field.accepted}, got {_shown(value)}: "
                "write numbers and true or false without quotes"
            )
        parsed[key] = _coerce(field, value, owner)
    return parsed


def config_to_dict(config: Any) -> dict[str, Any]:
    """A JSON- and TOML-friendly dict of the config (tuples become lists)."""
    result = {}
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        result[field.name] = list(value) if isinstance(value, tuple) else value
    return result


def config_to_toml(config: Any) -> str:
    """The config as TOML, a `key = value` line per field; None, which TOML lacks, is left out."""
    lines = []
    for key, value in config_to_dict(config).items():
        if value is not None:
            lines.append(f"{key} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def toml_loads(text: str) -> dict[str, Any]:
    """Parse TOML text (tomllib, or tomli before Python 3.11)."""
    return _toml_module().loads(text, parse_float=_toml_float)


def toml_load_file(path: Any) -> dict[str, Any]:
    """Parse a TOML file; a ConfigError names the file when it is missing or malformed."""
    if os.path.isdir(path):
        raise ConfigError(f"config file {path} is a folder: give a TOML file")
    try:
        text = read_untrusted(path, MAX_CONFIG_BYTES)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except OSError as error:  # a FIFO, a device, an unreadable file
        reason = error.strerror or str(error)
        raise ConfigError(f"cannot read config file {path}: {reason}") from None
    except ValueError as error:  # larger than any model config
        raise ConfigError(f"config file {path} is not a model config: {error}") from None
    try:
        # utf-8-sig drops the byte-order mark that some editors write and TOML does not allow
        return toml_loads(text.decode("utf-8-sig"))
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"config file {path} is not UTF-8 text (byte 0x{error.object[error.start]:02x} at "
            f"offset {error.start}): save it as UTF-8"
        ) from None
    except RefusedValue as refused:
        raise ConfigError(
            f"config file {path} holds {refused.args[0]}, a number {refused.rule}: write 0, or a "
            "larger number"
        ) from None
    except ValueError as error:  # tomllib's TOMLDecodeError
        raise ConfigError(f"config file {path} is not valid TOML: {error}") from None
    except RecursionError:
        raise ConfigError(f"config file {path} nests too deeply to be a model config") from None


def _toml_module() -> Any:
    if sys.version_info >= (3, 11):
        import tomllib

        return tomllib
    import tomli

    return tomli


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    return str(value)


def parse_assignment(text: str) -> tuple[str, str]:
    """Split one `key=value` command-line override."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"expected key=value after -o, got {_shown(text)}")
    if key.strip().startswith("-"):
        raise ConfigError(
            f"-o takes a config field as key=value, got {_shown(text)}: give command-line "
            "options such as --lr on their own"
        )
    return key.strip().replace("-", "_"), value.strip()


def _unknown_key_message(key: str, fields: Mapping[str, ConfigField], owner: str) -> str:
    close = difflib.get_close_matches(key, list(fields), n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    known = ", ".join(fields) or "(none)"
    return f"unknown option {_shown(key)} for {owner}; {hint}known options: {known}"


FLOAT32_MAX = 3.4028234663852886e38
MAX_SHOWN = 80  # characters of a value an error quotes


class RefusedValue(ValueError):
    """A value of the option's type that it still refuses, with the rule it breaks in words."""

    def __init__(self, value: Any, rule: str) -> None:
        super().__init__(value)
        self.rule = rule


def _coerce(field: ConfigField, value: Any, owner: str) -> Any:
    try:
        result = _coerce_type(field.type, value)
    except RefusedValue as refused:
        raise ConfigError(
            f"option {field.name!r} of {owner} must be {field.accepted}, {refused.rule}; "
            f"got {_shown(value)}"
        ) from None
    except (TypeError, ValueError):
        raise ConfigError(
            f"option {field.name!r} of {owner} must be {field.accepted}, got {_shown(value)}"
        ) from None
    _check_range(field, result, owner)
    return result


def _shown(value: Any) -> str:
    """A value as an error quotes it: as TOML writes it (true, [8, 8], a date), text quoted with
    the bytes it could not decode as \\xNN, all of it cut short to keep the error one line."""
    if isinstance(value, str):
        undecoded = any("\udc80" <= char <= "\udcff" for char in value)
        shown = repr(value.encode("utf-8", "surrogateescape"))[1:] if undecoded else repr(value)
    elif isinstance(value, (list, tuple)):
        shown = "[" + ", ".join(map(_shown, value)) + "]"
    else:
        shown = _toml_value(value)
    return shown if len(shown) <= MAX_SHOWN else shown[: MAX_SHOWN - 1] + "…"


def _coerce_type(expected: Any, value: Any) -> Any:
    base, optional = _unwrap_optional(expected)
    if optional and (value is None or (isinstance(value, str) and value.lower() == "none")):
        return None
    origin = typing.get_origin(base)
    if origin is Literal:
        for choice in typing.get_args(base):
            if value == choice or (isinstance(value, str) and value == str(choice)):
                return choice
        raise ValueError(value)
    if origin is tuple:
        item_type = typing.get_args(base)[0]
        if isinstance(value, str):
            text = value.replace(" ", "")
            if text.startswith(("[", "(")):
                raise RefusedValue(value, "its items between commas, without brackets")
            items = text.split(",") if text else []
        elif isinstance(value, (list, tuple)):
            items = list(value)
        else:
            raise TypeError(value)
        if "" in items:  # `a,,b`, a trailing comma, `["a", ""]`: a slip, not a wish for fewer
            raise RefusedValue(value, "with no empty item between commas")
        return tuple(_coerce_type(item_type, item) for item in items)
    if base is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
        raise ValueError(value)
    if base is int:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise TypeError(value)
        if isinstance(value, str) and not _PLAIN_INTEGER.fullmatch(value.strip()):
            raise ValueError(value)  # int() also reads 4_0 as 40, and full-width digits
        number = int(value)
        if not -(2**63) <= number < 2**63:  # a size past int64 is no size torch can hold
            raise RefusedValue(value, "within int64's range")
        return number
    if base is float:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise TypeError(value)
        if isinstance(value, str) and (not value.isascii() or "_" in value):
            raise ValueError(value)  # as for int: float() reads 1_0 and full-width digits
        number = float(value)
        # nan and inf pass every range check and poison training; so does a number past
        # float32's range, which the models compute in, and which becomes inf there.
        if not math.isfinite(number) or abs(number) > FLOAT32_MAX:
            raise RefusedValue(value, f"finite and within float32's range (±{FLOAT32_MAX:.2g})")
        if _rounds_to_zero(value, number):
            raise RefusedValue(value, "not so small that float32 rounds it to 0")
        return number
    if base is str:
        if not isinstance(value, str):
            raise TypeError(value)
        return value
    raise TypeError(f"unsupported config field type {expected!r}")


def _rounds_to_zero(written: Any, number: float) -> bool:
    """Whether a number written non-zero reads as 0 (1e-400 as a float) or becomes 0 in float32
    (1e-50), which the models compute in: either would train silently as 0."""
    mantissa = written.lower().partition("e")[0] if isinstance(written, str) else ""
    if number == 0:
        return any(map(str.isdigit, mantissa.strip("0.+-")))
    return struct.unpack("f", struct.pack("f", number))[0] == 0


def _toml_float(text: str) -> float:
    number = float(text)
    if _rounds_to_zero(text, number):
        raise RefusedValue(text, "float32 rounds to 0")
    return number


def _check_range(field: ConfigField, value: Any, owner: str) -> None:
    items = value if isinstance(value, tuple) else (value,)
    for item in items:
        if not isinstance(item, (int, float)) or isinstance(item, bool):
            continue
        too_low = field.min is not None and item < field.min
        too_high = field.max is not None and item > field.max
        if too_low or too_high:
            raise ConfigError(
                f"option {field.name!r} of {owner} must be {field.accepted}, got {_shown(value)}"
            )


def _quoted_number(expected: Any, value: Any) -> bool:
    """Whether a typed value (TOML's) gives text where an option of type `expected` takes no
    text: a number, a switch, or such an item of a list. Text is taken for a string or a choice
    of strings, a list of them (`"color,translation"` as -o writes it), and `none`."""
    base, optional = _unwrap_optional(expected)
    if optional and isinstance(value, str) and value.lower() == "none":
        return False
    if typing.get_origin(base) is tuple:
        base = typing.get_args(base)[0]
        if isinstance(value, list):
            return any(_quoted_number(base, item) for item in value)
    if not isinstance(value, str):
        return False
    if typing.get_origin(base) is Literal:
        return not all(isinstance(choice, str) for choice in typing.get_args(base))
    return base is not str


def _unwrap_optional(expected: Any) -> tuple[Any, bool]:
    if typing.get_origin(expected) in (typing.Union, types.UnionType):
        args = [arg for arg in typing.get_args(expected) if arg is not type(None)]
        if len(args) == 1:
            return args[0], True
    return expected, False


def _type_name(expected: Any) -> str:
    base, optional = _unwrap_optional(expected)
    origin = typing.get_origin(base)
    if origin is Literal:
        name = "choice"
    elif origin is tuple:
        name = f"list of {_type_name(typing.get_args(base)[0])}"
    else:
        name = getattr(base, "__name__", str(base))
    return f"{name} or none" if optional else name
