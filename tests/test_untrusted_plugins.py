"""Plugins as untrusted code: whatever one does at import (exit, hang, print) or in its methods,
it breaks itself only, and gentool says so in one line."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from typer.testing import CliRunner

from gentool.checkpoint import RunFolder
from gentool.cli import app
from tests.conftest import TINY_DCGAN_ARGS, install_fake_distribution, install_for_subprocess

runner = CliRunner()
TINY = [*TINY_DCGAN_ARGS, "--limit", "48", "-b", "16", "--device", "cpu"]


def plugin_source(body: str, name: str = "rogue") -> str:
    """A plugin module: dcgan renamed, with `body` run at import; a `build` it defines is used."""
    return f"""
from dataclasses import replace
from gentool.plugins.dcgan import plugin as dcgan
{body}
plugin = replace(dcgan, name="{name}", build=globals().get("build", dcgan.build))
"""


def install(tmp_path, monkeypatch, body: str, name: str = "rogue") -> None:
    install_fake_distribution(
        tmp_path / "site", monkeypatch, module=f"rogue_{tmp_path.name}",
        source=plugin_source(body, name), entry_points={name: f"rogue_{tmp_path.name}:plugin"},
    )  # fmt: skip


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ("raise SystemExit(3)", "SystemExit: 3"),
        ("import sys; sys.exit('bye')", "SystemExit: bye"),
        ("raise KeyError('missing')", "KeyError: 'missing'"),
    ],
)
def test_a_plugin_that_exits_or_raises_at_import_breaks_itself_only(
    tmp_path, monkeypatch, body, error
):
    install(tmp_path, monkeypatch, body)
    info = runner.invoke(app, ["info", "dcgan"])
    assert info.exit_code == 0, info.output
    listed = json.loads(runner.invoke(app, ["list", "--json"]).stdout)
    (rogue,) = [row for row in listed if row["name"] == "rogue"]
    assert error in rogue["status"]
    asked = runner.invoke(app, ["info", "rogue"])
    assert asked.exit_code == 1 and error in asked.output


def test_a_plugin_whose_import_hangs_is_left_behind_after_the_time_limit(tmp_path):
    environment = install_for_subprocess(
        tmp_path / "site", module="sleepy", source=plugin_source("import time; time.sleep(3600)"),
        entry_points={"rogue": "sleepy:plugin"},
    )  # fmt: skip
    environment["GENTOOL_PLUGIN_TIMEOUT"] = "1"
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "gentool", "list", "--json"],
        capture_output=True, text=True, env=environment, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (rogue,) = [row for row in json.loads(result.stdout) if row["name"] == "rogue"]
    assert "took longer than 1 s" in rogue["status"] and "GENTOOL_PLUGIN_TIMEOUT" in rogue["status"]
    assert time.perf_counter() - started < 60


def test_a_plugin_that_prints_at_import_leaves_list_json_valid(tmp_path, monkeypatch):
    install(tmp_path, monkeypatch, "print('hello from the plugin')")
    result = runner.invoke(app, ["list", "--json"])
    assert result.exit_code == 0
    assert any(row["name"] == "rogue" for row in json.loads(result.stdout))


def test_a_broken_namesake_does_not_hide_the_builtin(tmp_path, monkeypatch):
    install(tmp_path, monkeypatch, "raise ImportError('no such thing')", name="dcgan")
    result = runner.invoke(app, ["info", "dcgan"])
    assert result.exit_code == 0, result.output
    assert "warning: another plugin named 'dcgan', from fake-models 1.2, is broken" in (
        result.output
    )


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("raise RuntimeError('no GPU of mine')", "raised RuntimeError: no GPU of mine in build"),
        ("raise SystemExit(4)", "raised SystemExit: 4 in build"),
        ("raise ValueError('rogue needs colour images')", "error: rogue needs colour images"),
    ],
)
def test_a_plugin_that_fails_to_build_is_named_in_one_line(
    tmp_path, monkeypatch, in_tmp, code, message
):
    install(tmp_path, monkeypatch, f"def build(config, spec):\n    {code}\n")
    result = runner.invoke(app, ["train", "rogue", *TINY, "--run-dir", "run"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert message in result.output.strip().splitlines()[-1]
    assert not (in_tmp / "run").exists()


SAMPLE_FAILS = """
def build(config, spec):
    from gentool.plugins.dcgan.model import DCGAN

    class Failing(DCGAN):
        def sample(self, n, *, labels=None, generator=None):
            raise AttributeError("'NoneType' object has no attribute 'to'")

    return Failing(config, spec)
"""


def test_a_plugin_that_fails_to_sample_costs_no_epoch(tmp_path, monkeypatch, in_tmp):
    install(tmp_path, monkeypatch, SAMPLE_FAILS)
    result = runner.invoke(app, ["train", "rogue", *TINY, "--epochs", "2", "--run-dir", "run"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "plugin 'rogue' (from fake-models 1.2) raised AttributeError" in result.output
    assert "in sample" in result.output
    record = RunFolder(in_tmp / "run").read()
    assert (record.progress.epoch, record.checkpoint) == (1, "checkpoint-00000003")


def test_a_learning_rate_far_above_the_default_is_named_when_training_diverges(in_tmp):
    result = runner.invoke(app, ["train", "dcgan", *TINY, "--lr", "1e38", "--run-dir", "run"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    advice = "lr 1e+38 is far above dcgan's default 0.0002: train a new run with a lower --lr"
    assert advice in result.output
    assert "run keeps only the untrained start of the run (step 0)" in result.output


def test_an_optimizer_step_past_float32_is_the_settings_fault_not_the_plugins(in_tmp):
    # Adam's first step divides lr by 1 − β1 = 0.1: 1e38 becomes 1e39, which float32 cannot
    # hold, and torch fails inside the step before any loss turns non-finite.
    args = ["train", "ae", "--limit", "16", "-b", "16", "-o", "image_size=16", "-o", "hidden=8"]
    result = runner.invoke(app, [*args, "--lr", "1e38", "--run-dir", "run"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    line = " ".join(result.output.split())
    assert "the 'ae' optimizer's step computed a number past float32's range at step 1" in line
    assert "lr 1e+38 is far above ae's default 0.001: train a new run with a lower --lr" in line
    assert "raised" not in line


def rogue_model(methods: str) -> str:
    """A plugin body whose `build` returns DCGAN with `methods` (indented class members)."""
    return f"""
def build(config, spec):
    from gentool.plugins.dcgan.model import DCGAN

    class Rogue(DCGAN):
{textwrap.indent(textwrap.dedent(methods), "        ")}
    return Rogue(config, spec)
"""


@pytest.mark.parametrize(
    ("methods", "message"),
    [
        (
            "def training_step(self, batch, context):\n    raise SystemExit(0)\n",
            "raised SystemExit: 0 in training_step",
        ),
        (
            "def configure_optimizers(self):\n    raise GeneratorExit('gone')\n",
            "raised GeneratorExit: gone in configure_optimizers",
        ),
        (
            "def phases(self):\n    return (phase for phase in ())\n",
            "phases() must return a list of Phase objects",
        ),
        ("training_step = None\n", "has no training_step() method"),
        (
            "class Unspeakable(Exception):\n    def __str__(self):\n        raise ValueError\n"
            "def training_step(self, batch, context):\n    raise self.Unspeakable()\n",
            "raised Unspeakable in training_step",
        ),
    ],
    ids=["exit-0", "generator-exit", "phases-generator", "no-training-step", "unprintable"],
)
def test_a_plugin_that_exits_or_misbehaves_in_training_is_one_line_and_exit_1(
    tmp_path, monkeypatch, in_tmp, methods, message
):
    install(tmp_path, monkeypatch, rogue_model(methods))
    result = runner.invoke(app, ["train", "rogue", *TINY, "--run-dir", "run"])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    last = result.output.strip().splitlines()[-1]
    assert "rogue" in last and message in last


def test_a_plugin_config_that_exits_while_checked_is_one_line(tmp_path, monkeypatch, in_tmp):
    body = """
from dataclasses import dataclass
from gentool.plugins.dcgan import Config as DCGANConfig

@dataclass(frozen=True)
class Config(DCGANConfig):
    def __post_init__(self):
        raise SystemExit(2)
"""
    install_fake_distribution(
        tmp_path / "site", monkeypatch, module="exiting_config",
        source=f"{plugin_source(body, 'rogue')}\nplugin = replace(plugin, Config=Config)\n",
        entry_points={"rogue": "exiting_config:plugin"},
    )  # fmt: skip
    result = runner.invoke(app, ["train", "rogue", *TINY, "--run-dir", "run"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "the config of rogue raised SystemExit: 2 while checking it" in result.output


SAMPLES_OF_THE_WRONG_SHAPE = """
def sample(self, n, *, labels=None, generator=None):
    return super().sample(n, labels=labels, generator=generator)[:, :1]
"""


def test_samples_of_the_wrong_shape_are_one_line_naming_the_plugin(tmp_path, monkeypatch, in_tmp):
    install(tmp_path, monkeypatch, rogue_model(SAMPLES_OF_THE_WRONG_SHAPE))
    result = runner.invoke(app, ["train", "rogue", *TINY, "--run-dir", "run"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "rogue: sample returned (64, 1, 16, 16), expected a tensor of" in result.output


@pytest.mark.parametrize(
    ("body", "replaced", "error"),
    [
        ("raise KeyboardInterrupt", "", "its import raised KeyboardInterrupt"),
        ("", "value_range=(0.0, float('nan'))", "must be two finite numbers"),
        ("", "value_range=(1.0, -1.0)", "must be two numbers, low < high"),
        ("", "latent_distribution=object()", "must be words, such as 'standard normal'"),
    ],
    ids=["keyboard-interrupt", "nan-range", "reversed-range", "latent-distribution"],
)
def test_a_plugin_broken_at_import_in_odd_ways_breaks_itself_only(
    tmp_path, monkeypatch, body, replaced, error
):
    source = plugin_source(body) + (f"plugin = replace(plugin, {replaced})\n" if replaced else "")
    install_fake_distribution(
        tmp_path / "site", monkeypatch, module=f"odd_{tmp_path.name}", source=source,
        entry_points={"rogue": f"odd_{tmp_path.name}:plugin"},
    )  # fmt: skip
    listed = runner.invoke(app, ["list", "--json"])
    assert listed.exit_code == 0, listed.output
    (rogue,) = [row for row in json.loads(listed.stdout) if row["name"] == "rogue"]
    assert error in rogue["status"]
    assert runner.invoke(app, ["info", "dcgan"]).exit_code == 0


def test_what_a_plugin_writes_to_descriptor_1_at_import_leaves_list_json_valid(tmp_path):
    environment = install_for_subprocess(
        tmp_path / "site", module="loud", source=plugin_source("import os; os.write(1, b'hi!\\n')"),
        entry_points={"rogue": "loud:plugin"},
    )  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-m", "gentool", "list", "--json"], capture_output=True, text=True,
        env=environment, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert any(row["name"] == "rogue" for row in json.loads(result.stdout))
    assert "hi!" in result.stderr


@pytest.mark.parametrize("seconds", ["inf", "nan", "-1", "soon"])
def test_a_plugin_time_limit_that_is_no_number_of_seconds_is_one_line(monkeypatch, seconds):
    monkeypatch.setenv("GENTOOL_PLUGIN_TIMEOUT", seconds)
    result = runner.invoke(app, ["list"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"GENTOOL_PLUGIN_TIMEOUT={seconds!r} is not a number of seconds" in result.output


def signal_ctrl_c_as_a_terminal_does() -> None:
    """Undo the ignored SIGINT a suite run in the background passes on to its processes."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


SWALLOWS_CTRL_C = """
def build(config, spec):
    import os, signal, time
    try:  # as numpy's import can, under torch's: the KeyboardInterrupt never reaches gentool
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(10)
    except KeyboardInterrupt:
        pass
    {then}
"""


@pytest.mark.parametrize(
    ("then", "exit_code", "said"),
    [
        ("return dcgan.build(config, spec)", 130, "stopped: SIGINT: stopped at epoch 1, step 1/"),
        ("raise ImportError('cannot load module more than once per process')", 130, "aborted"),
    ],
    ids=["then-trains", "then-fails"],
)
def test_a_ctrl_c_something_swallowed_still_ends_the_command_as_interrupted(
    tmp_path, then, exit_code, said
):
    environment = install_for_subprocess(
        tmp_path / "site", module="deaf", source=plugin_source(SWALLOWS_CTRL_C.format(then=then)),
        entry_points={"rogue": "deaf:plugin"},
    )  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-m", "gentool", "train", "rogue", *TINY, "--epochs", "5",
         "--run-dir", "run"],
        capture_output=True, text=True, cwd=tmp_path, timeout=300, env=environment,
        preexec_fn=signal_ctrl_c_as_a_terminal_does,
    )  # fmt: skip
    assert result.returncode == exit_code, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(said)
