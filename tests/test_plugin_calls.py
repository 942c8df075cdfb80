"""Every call gentool makes into a plugin's model is one the conformance kit makes too, so a
plugin that passes the kit cannot crash a command; and whatever a plugin raises, in any method,
is one line that names the plugin, its distribution, the method and the exception."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gentool.cli import app
from gentool.registry import resolve
from gentool.testing import check_plugin
from tests.conftest import install_fake_distribution, one_line_error
from tests.recording_plugin import ENTRY_POINTS, SOURCE

runner = CliRunner()
TRAIN = ["-o", "image_size=8", "-b", "4", "--limit", "12", "--epochs", "1", "--device", "cpu"]


@pytest.fixture
def recording(tmp_path, monkeypatch, in_tmp):
    """The recording plugins installed, and a labelled folder of 8×8 shapes in ./shapes."""
    site = tmp_path / "site"
    install_fake_distribution(
        site, monkeypatch, module="recording_models", source=SOURCE, entry_points=ENTRY_POINTS
    )
    monkeypatch.setenv("PYTHONPATH", str(site))  # the kit imports the plugin afresh
    monkeypatch.delitem(sys.modules, "recording_models", raising=False)
    made = runner.invoke(app, ["data", "make", "shapes", "shapes", "--n", "12", "--size", "8"])
    assert made.exit_code == 0, made.output
    import recording_models

    monkeypatch.setitem(sys.modules, "recording_models", recording_models)
    return recording_models


def gentool(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, (args, result.output)
    return result.output


def run_every_command(name: str) -> None:
    """Train (with a per-epoch evaluation), then every command that calls the model."""
    run = ["--run", f"run-{name}"]
    gentool("train", name, "--data", "shapes", *TRAIN, "--run-dir", f"run-{name}",
            "--eval-every", "1", "--eval-n", "10", "--eval-metrics", "fid,recon")  # fmt: skip
    gentool("sample", name, *run, "--n", "4")
    gentool("encode", name, *run, "--out", f"codes-{name}.safetensors")
    gentool("reconstruct", name, *run, "--n", "4")
    gentool("interpolate", name, *run, "--rows", "2", "--steps", "3")
    first, last = (
        str(sorted(Path("shapes", name).glob("*.png"))[0]) for name in ("circle", "square")
    )
    gentool("interpolate", name, *run, "--from", first, "--to", last, "--steps", "3")
    gentool("eval", name, *run, "--n", "10", "--metrics", "fid,recon")
    if name == "recorder-cond":
        gentool("sample", name, *run, "--label", "circle", "--n", "2")
        gentool("interpolate", name, *run, "--label", "1", "--rows", "1", "--steps", "3")


@pytest.mark.parametrize("name", ["recorder", "recorder-cond"])
def test_the_kit_makes_every_call_that_gentool_makes(recording, name):
    run_every_command(name)
    by_gentool = set(recording.CALLS)
    recording.CALLS.clear()
    check_plugin(resolve(name).plugin)
    by_the_kit = set(recording.CALLS)
    assert by_gentool, "the commands made no calls: the recording broke"
    assert by_gentool - by_the_kit == set()


@pytest.mark.parametrize(
    ("method", "command"),
    [
        ("build", "train"),
        ("configure_optimizers", "train"),
        ("training_step", "train"),
        ("sample", "train"),  # the epoch's grid
        ("sample", "sample"),
        ("sample", "eval"),
        ("sample_latent", "interpolate"),
        ("decode", "interpolate"),
        ("encode", "encode"),
        ("reconstruct", "reconstruct"),
        ("reconstruct", "eval"),
        ("evaluation_metrics", "eval"),
        ("state_dict", "train"),  # its checkpoint
        ("load_state_dict", "sample"),
    ],
)
def test_a_plugins_exception_is_one_line_naming_it(recording, monkeypatch, method, command):
    run = ["--run", "run-recorder"]
    if command != "train":
        gentool("train", "recorder", "--data", "shapes", *TRAIN, "--run-dir", "run-recorder")
    arguments = {
        "train": ["--data", "shapes", *TRAIN, "--run-dir", "run-other"],
        "sample": [*run, "--n", "2"],
        "eval": [*run, "--n", "10", "--metrics", "fid" if method == "sample" else "recon"],
        "interpolate": [*run, "--rows", "1", "--steps", "3"],
        "encode": [*run, "--out", "codes.safetensors"],
        "reconstruct": [*run, "--n", "2"],
    }[command]
    monkeypatch.setenv("RAISE_IN", method)
    line = one_line_error(runner.invoke(app, [command, "recorder", *arguments]))
    raised = "SystemExit: 0" if method == "load_state_dict" else f"RuntimeError: {method} fell over"
    assert line.startswith(f"error: plugin 'recorder' (from fake-models 1.2) raised {raised}")
    assert f" in {method}" in line and "GENTOOL_DEBUG=1 shows the traceback" in line


def test_gentool_debug_shows_the_plugins_own_traceback(recording, monkeypatch):
    gentool("train", "recorder", "--data", "shapes", *TRAIN, "--run-dir", "run-recorder")
    monkeypatch.setenv("RAISE_IN", "encode")
    monkeypatch.setenv("GENTOOL_DEBUG", "1")
    result = runner.invoke(app, ["encode", "recorder", "--run", "run-recorder", "--out", "c.st"])
    assert isinstance(result.exception, RuntimeError) and "encode fell over" in str(
        result.exception
    )


def test_a_config_build_refuses_is_the_configs_error_with_a_traceback_on_demand(
    recording, monkeypatch
):
    monkeypatch.setenv("RAISE_IN", "build-refusal")
    train = ["train", "recorder", "--data", "shapes", *TRAIN, "--run-dir", "refused"]
    line = one_line_error(runner.invoke(app, train))
    assert line == "error: recorder needs images of at least 16 pixels a side"
    monkeypatch.setenv("GENTOOL_DEBUG", "1")
    result = runner.invoke(app, train)
    assert isinstance(result.exception, ValueError)


def test_a_conditional_model_without_labels_says_which_option_gives_them(recording):
    gentool("train", "recorder-cond", "--data", "shapes", *TRAIN, "--run-dir", "run")
    faces = ["--data", "builtin:faces", "--run", "run"]
    for command in (["encode", *faces, "--out", "c.st"], ["reconstruct", *faces, "--n", "2"]):
        line = one_line_error(runner.invoke(app, [command[0], "recorder-cond", *command[1:]]))
        assert "recorder-cond is conditional" in line and "give --data a labelled dataset" in line
    gentool("sample", "recorder-cond", "--run", "run", "--n", "1", "--out", "a.png")
    walk = ["interpolate", "recorder-cond", "--run", "run", "--from", "a.png", "--to", "a.png"]
    line = one_line_error(runner.invoke(app, walk))
    assert "recorder-cond is conditional" in line and "walk in with --label" in line


def test_a_conditional_models_epoch_grid_has_one_row_per_class(recording, monkeypatch):
    from gentool.training import loop

    grids = []
    draw = loop.draw_uint8

    def drawn(model, plugin, spec, count, *, seed, labels=None):
        grids.append(labels)
        return draw(model, plugin, spec, count, seed=seed, labels=labels)

    monkeypatch.setattr(loop, "draw_uint8", drawn)
    gentool("train", "recorder-cond", "--data", "shapes", *TRAIN, "--run-dir", "run")
    classes = 6  # builtin shapes: circle, square, triangle, cross, ring, star
    per_class = loop.SAMPLE_GRID_SIZE // classes
    rows = grids[0].view(classes, per_class)  # one row of the grid per class
    assert rows.tolist() == [[label] * per_class for label in range(classes)]


def test_labels_of_other_data_are_matched_to_the_runs_classes_by_name(recording, in_tmp):
    import shutil

    import torch
    from safetensors.torch import load_file

    gentool("train", "recorder-cond", "--data", "shapes", *TRAIN, "--run-dir", "run")
    gentool("encode", "recorder-cond", "--run", "run", "--out", "all.safetensors")
    subset = in_tmp / "subset"
    for name in ("square", "circle"):  # fewer classes, in other positions than the run's
        shutil.copytree(Path("shapes", name), subset / name)
    gentool(
        "encode", "recorder-cond", "--run", "run", "--data", str(subset), "--out", "sub.safetensors"
    )
    every, some = load_file("all.safetensors"), load_file("sub.safetensors")
    square = sorted(Path("shapes").rglob("*.png")).index(
        sorted(Path("shapes/square").glob("*.png"))[0]
    )
    # encoded as a square still; in another batch, so to rounding (a CPU's kernels may
    # accumulate a batch of another size in another order)
    torch.testing.assert_close(some["codes"][2], every["codes"][square])
    (subset / "hexagon").mkdir()
    shutil.copy(next((subset / "square").glob("*.png")), subset / "hexagon" / "0.png")
    command = ["encode", "recorder-cond", "--run", "run", "--data", str(subset), "--out", "x.st"]
    result = runner.invoke(app, command)
    assert "holds the class 'hexagon', which the run was not trained on" in one_line_error(result)
    command = ["eval", "recorder-cond", "--run", "run", "--data", str(subset), "--metrics", "fid"]
    result = runner.invoke(app, command)  # the model cannot draw a hexagon to compare with
    assert "holds the class 'hexagon', which the run was not trained on" in one_line_error(result)


def test_a_conditional_model_of_api_1_0_encodes_and_reconstructs_without_labels():
    import torch

    from gentool.model_calls import call_encode, call_reconstruct

    class WrittenForOneZero(torch.nn.Module):  # 1.0 gave labels to sample and decode only
        def encode(self, x):
            return x.flatten(1)[:, :3]

        def reconstruct(self, x):
            return x

    plugin, images = resolve("cgan").plugin, torch.rand(2, 1, 4, 4)
    labels = torch.tensor([0, 1])
    model = WrittenForOneZero()
    assert call_encode(model, plugin, images, labels=labels).shape == (2, 3)
    assert call_reconstruct(model, plugin, images, labels=labels).shape == images.shape


def test_a_conditional_models_encoder_exports_with_its_labels(recording):
    import json

    import torch

    gentool("train", "recorder-cond", "--data", "shapes", *TRAIN, "--run-dir", "run")
    gentool("export", "recorder-cond", "--run", "run", "--part", "encoder",
            "--format", "torchscript", "--out", "encoder.pt")  # fmt: skip
    described = json.loads(Path("encoder.pt.json").read_text())
    assert [item["name"] for item in described["inputs"]] == ["images", "labels"]
    encoder = torch.jit.load("encoder.pt")
    images = torch.rand(2, 3, 8, 8)
    circle, square = (torch.tensor([index, index]) for index in (0, 4))
    assert not torch.equal(encoder(images, circle), encoder(images, square))


def test_a_plugins_exception_in_several_processes_is_one_line(recording, tmp_path):
    import os
    import subprocess

    command = [sys.executable, "-m", "gentool", "train", "recorder", "--data", "shapes", *TRAIN,
               "--run-dir", "run", "--nproc", "2"]  # fmt: skip
    environment = {**os.environ, "RAISE_IN": "training_step", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    said = (done.stdout + done.stderr).strip().splitlines()
    assert (
        "Traceback" not in done.stderr and [line for line in said if "error" in line] == said[-1:]
    )
    # Rank 0's line, or, when another process failed first, that process's.
    assert re.match(
        r"error: (process 1: )?plugin 'recorder' \(from fake-models 1.2\) raised", said[-1]
    )
