"""Property tests: whatever the config parsers and the image loader are fed, they answer with a
result or with their documented errors (ConfigError, DataError and a DataWarning for a skipped
file, CheckpointError), never anything else. Examples are derandomized so CI sees the same ones."""

from __future__ import annotations

import contextlib
import io
import json
import math
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from rich.console import Console

from gentool.config import config_to_dict, parse_assignment, toml_load_file
from gentool.data import DataWarning, load_dataset
from gentool.errors import CheckpointError, ConfigError, DataError, GentoolError
from gentool.models import load_trained
from gentool.registry import discover, resolve
from gentool.training import TrainRequest, run_training
from tests.conftest import TINY_DCGAN

BUILT_IN = [entry for entry in discover() if entry.distribution == "gentool"]
FUZZ = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["nan", "inf", "-inf", "1e999", "-0", "-1", "none", "true", "1,2", ""]),
)
values = st.one_of(scalars, st.lists(scalars, max_size=4))


SPECIAL_NUMBERS = st.sampled_from(["nan", "inf", "-inf", "1e999", float("nan"), float("inf")])
LIKELY_VALUES = {  # values of a field's own type, near and past its limits
    bool: st.booleans() | st.sampled_from(["yes", "off", "maybe"]),
    int: st.integers(-3, 300) | st.integers(-3, 300).map(str),
    float: st.floats(-10, 10) | st.floats(-10, 10).map(str) | SPECIAL_NUMBERS,
    str: st.text(max_size=8),
    tuple: st.lists(st.integers(-1, 64), max_size=3) | st.text(",0123456789", max_size=8),
}


@st.composite
def config_values(draw):
    """Mostly well-typed values for a built-in model's fields, some junk, some unknown keys."""
    entry = draw(st.sampled_from(BUILT_IN))
    fields = entry.plugin.config_fields()
    result = {}
    for field in draw(st.lists(st.sampled_from(fields), max_size=3, unique=True)):
        likely = LIKELY_VALUES.get(type(field.default), values)
        if isinstance(field.default, str):  # a choice: its own values are the likely ones
            likely = st.sampled_from(field.accepted.removeprefix("one of ").split(", ")) | likely
        result[field.name] = draw(likely | values) if draw(st.booleans()) else draw(likely)
    if draw(st.integers(0, 9)) == 0:
        result[draw(st.text(min_size=1, max_size=10))] = draw(values)
    return entry.plugin, result


@settings(FUZZ, max_examples=200)
@given(config_values())
def test_any_config_values_give_a_config_or_a_config_error(plugin_and_values):
    plugin, given_values = plugin_and_values
    try:
        config = plugin.parse_config(given_values)
    except ConfigError:
        return
    assert plugin.parse_config(config_to_dict(config)) == config  # what it accepts round-trips
    numbers = [value for value in config_to_dict(config).values() if isinstance(value, float)]
    assert all(math.isfinite(number) for number in numbers)  # nan passes every range check


@settings(FUZZ, max_examples=200)
@given(st.sampled_from(BUILT_IN), st.lists(st.text(max_size=24), max_size=4))
def test_any_dash_o_assignments_give_a_config_or_a_config_error(entry, assignments):
    with contextlib.suppress(ConfigError):
        entry.plugin.parse_config(dict(parse_assignment(text) for text in assignments))


@FUZZ
@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_any_config_file_gives_values_or_a_config_error(content):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder, "config.toml")
        path.write_bytes(content)
        with contextlib.suppress(ConfigError):
            resolve("dcgan").plugin.parse_config(toml_load_file(path))


def seed_images() -> dict[str, bytes]:
    """Small valid files of the formats people keep images in, for the mutations to start from."""
    pixels = np.random.default_rng(0).integers(0, 256, (9, 7, 3), dtype=np.uint8)
    rgb = Image.fromarray(pixels)
    images = {
        "png": (rgb, "PNG"),
        "palette.png": (rgb.convert("P"), "PNG"),
        "alpha.png": (rgb.convert("RGBA"), "PNG"),
        "grey16.png": (Image.fromarray(pixels[..., 0].astype(np.uint16) * 257), "PNG"),
        "jpg": (rgb, "JPEG"),
        "gif": (rgb.convert("P"), "GIF"),
        "bmp": (rgb, "BMP"),
        "tif": (rgb, "TIFF"),
        "webp": (rgb, "WEBP"),
    }
    encoded = {}
    for name, (image, image_format) in images.items():
        buffer = io.BytesIO()
        image.save(buffer, format=image_format)
        encoded[name] = buffer.getvalue()
    return encoded


SEEDS = seed_images()


@st.composite
def damaged_images(draw):
    """A valid file with bytes overwritten, inserted or cut off, or bytes from nowhere."""
    if draw(st.booleans()):
        return "random.png", draw(st.binary(max_size=300))
    name = draw(st.sampled_from(sorted(SEEDS)))
    content = bytearray(SEEDS[name])
    for _ in range(draw(st.integers(1, 6))):
        if not content:
            break
        position = draw(st.integers(0, len(content) - 1))
        action = draw(st.sampled_from(["overwrite", "insert", "cut", "truncate"]))
        junk = draw(st.binary(min_size=1, max_size=8))
        if action == "overwrite":
            content[position : position + len(junk)] = junk
        elif action == "insert":
            content[position:position] = junk
        elif action == "cut":
            del content[position : position + len(junk)]
        else:
            del content[max(position, 1) :]
    return name, bytes(content)


@settings(FUZZ, max_examples=150)
@given(damaged_images())
def test_any_image_bytes_are_decoded_or_skipped_with_a_count(named_content):
    name, content = named_content
    with tempfile.TemporaryDirectory() as folder:
        Image.new("RGB", (5, 5), (9, 9, 9)).save(Path(folder, "good.png"))
        Path(folder, f"fuzzed.{name.rpartition('.')[2]}").write_bytes(content)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            dataset = load_dataset(folder, image_size=8)
    skipped = [w for w in caught if issubclass(w.category, DataWarning)]
    assert len(dataset) + len(skipped) == 2
    assert dataset.images.dtype == torch.uint8 and dataset.images.shape[1:] == (3, 8, 8)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("fuzz") / "run"
    request = TrainRequest(
        entry=resolve("dcgan"),
        config_values=TINY_DCGAN,
        limit=16,
        batch_size=16,
        epochs=1,
        device="cpu",
        run_dir=run_dir,
    )
    run_training(request, Console(file=io.StringIO()))
    return run_dir


json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner)
)


@settings(FUZZ, max_examples=60)
@given(st.data())
def test_any_edit_to_run_json_loads_or_is_a_clear_error(trained_run, data):
    original = json.loads((trained_run / "run.json").read_text())
    damaged = json.loads(json.dumps(original))
    for _ in range(data.draw(st.integers(1, 3))):
        section = data.draw(st.sampled_from(sorted(damaged)))
        if isinstance(damaged[section], dict) and damaged[section] and data.draw(st.booleans()):
            key = data.draw(st.sampled_from(sorted(damaged[section])))
            damaged[section][key] = data.draw(json_values)
        else:
            damaged[section] = data.draw(json_values)
    try:
        (trained_run / "run.json").write_text(json.dumps(damaged))
        load_trained(resolve("dcgan"), trained_run, torch.device("cpu"))
    except (CheckpointError, ConfigError, DataError, GentoolError):
        pass
    finally:
        (trained_run / "run.json").write_text(json.dumps(original))
