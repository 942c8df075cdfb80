from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pytest

from gentool.config import (
    config_fields,
    config_to_dict,
    option,
    parse_assignment,
    parse_config,
)
from gentool.errors import ConfigError


@dataclass(frozen=True)
class Example:
    size: int = option(64, "image side", min=8, max=512)
    rate: float = option(1e-3, "learning rate", min=0)
    flag: bool = option(False, "a switch")
    loss: Literal["bce", "mse"] = option("bce", "reconstruction loss")
    hidden: tuple[int, ...] = option((256, 128), "hidden layer widths", min=1)
    label: str = option("x", "a name")
    limit: int | None = option(None, "an optional cap", min=1)

    def __post_init__(self) -> None:
        if self.size % 8:
            raise ValueError(f"size must be a multiple of 8, got {self.size}")


def parse(**values):
    return parse_config(Example, values, owner="example")


def test_defaults_validate_and_round_trip():
    config = parse()
    assert config == Example()
    assert parse(**config_to_dict(config)) == config


def test_strings_from_the_command_line_are_coerced_to_field_types():
    config = parse(size="128", rate="2e-4", flag="yes", loss="mse", hidden="64, 32", limit="none")
    assert config == Example(
        size=128, rate=2e-4, flag=True, loss="mse", hidden=(64, 32), limit=None
    )


def test_an_empty_list_option_means_no_items():
    assert parse(hidden="").hidden == ()


def test_toml_values_are_accepted_as_they_are():
    config = parse(size=32, rate=1, flag=True, hidden=[8, 4], limit=5)
    assert (config.rate, config.hidden, config.limit) == (1.0, (8, 4), 5)
    assert isinstance(config.rate, float)


def test_unknown_key_is_rejected_with_a_suggestion():
    with pytest.raises(
        ConfigError, match=r"unknown option 'sise' for example; did you mean 'size'"
    ):
        parse(sise=3)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("size", "big", r"option 'size' of example must be int in \[8, 512\], got 'big'"),
        ("size", 4, r"must be int in \[8, 512\], got 4"),
        ("size", 2.5, r"must be int"),
        ("size", True, r"must be int"),
        ("rate", -1.0, r"option 'rate' of example must be float >= 0"),
        ("flag", "maybe", r"option 'flag' of example must be bool"),
        ("loss", "l1", r"must be one of bce, mse, got 'l1'"),
        ("hidden", "64,0", r"option 'hidden' of example must be list of int >= 1"),
        ("hidden", "64,,32", r"must be list of int >= 1, with no empty item between commas"),
        ("hidden", "64,", r"must be list of int >= 1, with no empty item between commas"),
        ("hidden", [64, ""], r"must be list of int >= 1, with no empty item"),
        ("rate", "inf", r"option 'rate' of example must be float >= 0, finite and within float32"),
        ("rate", float("nan"), r"must be float >= 0, finite and within"),
        ("rate", "-1e39", r"must be float >= 0, finite and within float32's range \(±3.4e\+38\)"),
        ("rate", "1e-400", r"must be float >= 0, not so small that float32 rounds it to 0"),
        ("rate", 1e-50, r"not so small that float32 rounds it to 0; got 1e-50"),
        ("rate", "5e-46", r"not so small that float32 rounds it to 0"),
        ("limit", 2**63, r"option 'limit' of example must be int >= 1 or none, within int64's"),
        ("label", 3, r"option 'label' of example must be str"),
        ("limit", 0, r"must be int >= 1 or none"),
    ],
)
def test_bad_values_name_the_option_and_what_it_accepts(key, value, message):
    with pytest.raises(ConfigError, match=message):
        parse(**{key: value})


@pytest.mark.parametrize("zero", ["0", "-0.0", "0e-400", "000.000e5", 0.0])
def test_zero_written_any_way_is_zero(zero):
    assert parse(rate=zero).rate == 0


def test_cross_field_checks_become_config_errors():
    with pytest.raises(ConfigError, match="size must be a multiple of 8, got 20"):
        parse(size=20)


def test_fields_describe_themselves():
    fields = {field.name: field for field in config_fields(Example)}
    assert fields["size"].help == "image side"
    assert fields["size"].accepted == "int in [8, 512]"
    assert fields["loss"].accepted == "one of bce, mse"
    assert fields["hidden"].type_name == "list of int"
    assert fields["limit"].accepted == "int >= 1 or none"


def test_list_defaults_are_refused_because_configs_are_immutable():
    with pytest.raises(TypeError, match="use a tuple"):
        option([1, 2], "widths")


def test_assignments_split_on_the_first_equals_sign():
    assert parse_assignment("latent-dim=128") == ("latent_dim", "128")
    assert parse_assignment("name=a=b") == ("name", "a=b")
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_assignment("latent_dim")
