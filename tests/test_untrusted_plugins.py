"""Plugins as untrusted code: whatever one does at import (exit, hang, print) or in its methods,
it breaks itself only, and gentool says so in one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from gentool.checkpoint import RunFolder
from gentool.cli import app
from tests.conftest import TINY_DCGAN_ARGS, install_fake_distribution

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
    site = tmp_path / "site"
    monkeypatch = pytest.MonkeyPatch()
    install_fake_distribution(
        site, monkeypatch, module="sleepy", source=plugin_source("import time; time.sleep(3600)"),
        entry_points={"rogue": "sleepy:plugin"},
    )  # fmt: skip
    monkeypatch.undo()
    environment = {
        **os.environ, "PYTHONPATH": str(site), "GENTOOL_PLUGIN_TIMEOUT": "1",
    }  # fmt: skip
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
    assert "plugin 'rogue' raised AttributeError" in result.output
    assert "in sample" in result.output
    record = RunFolder(in_tmp / "run").read()
    assert (record.progress.epoch, record.checkpoint) == (1, "checkpoint-00000003")


def test_a_learning_rate_far_above_the_default_is_named_when_training_diverges(in_tmp):
    result = runner.invoke(app, ["train", "dcgan", *TINY, "--lr", "1e38", "--run-dir", "run"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "lr 1e+38 is far above dcgan's default 0.0002: lower --lr" in result.output
