"""Loggers as plugins (`gentool train --log`): found through the `gentool.loggers` entry points of
an installed package, given every logged value at the logging interval, and kept apart from
training: one that fails is named in one warning line and training finishes."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from gentool.cli import app
from gentool.config import toml_loads
from gentool.registry import resolve
from gentool.training import TrainRequest, logbook, run_training
from tests.conftest import (
    TINY_DCGAN,
    TINY_DCGAN_ARGS,
    install_fake_distribution,
    install_for_subprocess,
    one_line_error,
)

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()
TINY = [*TINY_DCGAN_ARGS, "--limit", "32", "-b", "16", "--device", "cpu", "--epochs", "2"]
LOGGERS_GROUP = "gentool.loggers"

# Each logger writes down every call it gets, in recorded.jsonl beside the run.
RECORDING_LOGGERS = """
import json
import os
from pathlib import Path


class Recorder:
    def __init__(self, run_dir, run):
        self.file = Path(run_dir) / "recorded.jsonl"
        self.write(
            call="start", model=run.model, resumed=run.resumed, start_step=run.start_step,
            rank=os.environ.get("RANK", "0"),
        )

    def write(self, **line):
        with self.file.open("a") as file:
            file.write(json.dumps(line) + "\\n")

    def scalars(self, steps):
        self.write(
            call="scalars",
            steps=[{"step": s.step, "epoch": s.epoch, **s.values} for s in steps],
        )

    def image(self, step, name, pixels):
        self.write(
            call="image", step=step, name=name, shape=list(pixels.shape), dtype=str(pixels.dtype)
        )

    def text(self, step, name, text):
        self.write(call="text", step=step, name=name, text=text)

    def close(self):
        self.write(call="close")


class FailsInScalars(Recorder):
    def scalars(self, steps):
        raise RuntimeError("tracker [bold]unreachable\\x1b[2J")


class FailsToStart:
    def __init__(self, run_dir, run):
        raise PermissionError("no token for the tracker")


class ScalarsOnly:
    def __init__(self, run_dir, run):
        self.file = Path(run_dir) / "scalars-only.jsonl"

    def scalars(self, steps):
        with self.file.open("a") as file:
            file.write(json.dumps([s.step for s in steps]) + "\\n")


class ChangesWhatItGets:
    def __init__(self, run_dir, run):
        pass

    def scalars(self, steps):
        for step in steps:
            step.values["loss_d"] = 12345.0

    def image(self, step, name, pixels):
        pixels[...] = 0


class ThreadFails:
    def __init__(self, run_dir, run):
        import threading

        def write():
            raise OSError(30, "Read-only file system")

        threading.Thread(target=write, name="event-writer").start()
"""
FAILS_TO_IMPORT = "raise ImportError(\"No module named 'mlflow'\")\n"
ENTRY_POINTS = {
    "recorder": "recording_loggers:Recorder",
    "fails-in-scalars": "recording_loggers:FailsInScalars",
    "fails-to-start": "recording_loggers:FailsToStart",
    "fails-to-import": "failing_logger:Logger",
    "scalars-only": "recording_loggers:ScalarsOnly",
    "changes-what-it-gets": "recording_loggers:ChangesWhatItGets",
    "thread-fails": "recording_loggers:ThreadFails",
}


def install_loggers(site: Path, monkeypatch: pytest.MonkeyPatch | None = None) -> dict[str, str]:
    """The test loggers as the distribution fake-loggers: installed in this process with
    `monkeypatch`, else for another; that process's environment."""
    options = dict(
        dist="fake-loggers", module="recording_loggers", source=RECORDING_LOGGERS,
        entry_points=ENTRY_POINTS, group=LOGGERS_GROUP,
    )  # fmt: skip
    if monkeypatch is None:
        environment = install_for_subprocess(site, **options)
    else:
        install_fake_distribution(site, monkeypatch, **options)
        environment = {}
    (site / "failing_logger.py").write_text(FAILS_TO_IMPORT)
    return environment


@pytest.fixture
def loggers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_loggers(tmp_path / "site", monkeypatch)


def recorded(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "recorded.jsonl").read_text().splitlines()]


def sent_steps(run_dir: Path) -> list[dict]:
    """Every step's values the recorder was given, in the order it got them."""
    calls = recorded(run_dir)
    return [step for call in calls if call["call"] == "scalars" for step in call["steps"]]


def logged_lines(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def warnings_in(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("warning:")]


def test_an_installed_logger_is_found_by_name_and_receives_every_value(loggers, in_tmp):
    result = runner.invoke(app, ["train", "dcgan", *TINY, "--run-dir", "run", "--log", "recorder"])
    assert result.exit_code == 0, result.output
    calls = recorded(in_tmp / "run")
    assert [call["call"] for call in calls[:2]] == ["start", "text"]
    assert calls[0] == {
        "call": "start", "model": "dcgan", "resumed": False, "start_step": 0, "rank": "0",
    }  # fmt: skip
    description = json.loads(calls[1]["text"])
    assert (calls[1]["step"], calls[1]["name"]) == (0, "config")
    assert description["model"] == "dcgan" and description["config"]["latent_dim"] == 8
    assert sent_steps(in_tmp / "run") == logged_lines(in_tmp / "run")
    images = [call for call in calls if call["call"] == "image"]
    assert [(image["step"], image["name"], image["dtype"]) for image in images] == [
        (2, "samples", "uint8"),
        (4, "samples", "uint8"),
    ]
    assert images[0]["shape"][2] == 3
    assert calls[-1] == {"call": "close"}
    assert json.loads((in_tmp / "run" / "run.json").read_text())["training"]["loggers"] == [
        "recorder"
    ]


def test_values_reach_a_logger_at_the_logging_interval_not_each_step(
    loggers, tmp_path, monkeypatch, tiny_cpu_training
):
    monkeypatch.setattr(logbook, "LOG_SECONDS", float("inf"))  # the interval alone decides
    request = TrainRequest(
        resolve("dcgan"), config_values=TINY_DCGAN, limit=80, batch_size=8, epochs=1,
        run_dir=tmp_path / "run", device="cpu", log_every=4, log="recorder",
    )  # fmt: skip
    run_training(request, Console(file=io.StringIO()))
    calls = [call for call in recorded(tmp_path / "run") if call["call"] == "scalars"]
    # Ten steps: a call after steps 4 and 8 and at the epoch's end, each with its steps.
    assert [[step["step"] for step in call["steps"]] for call in calls] == [
        [1, 2, 3, 4],
        [5, 6, 7, 8],
        [9, 10],
    ]


def test_a_logger_needs_only_the_methods_it_uses(loggers, in_tmp):
    result = runner.invoke(
        app, ["train", "dcgan", *TINY, "--run-dir", "run", "--log", "scalars-only"]
    )
    assert result.exit_code == 0, result.output
    assert warnings_in(result.output) == []
    batches = (in_tmp / "run" / "scalars-only.jsonl").read_text().splitlines()
    assert [step for batch in batches for step in json.loads(batch)] == [1, 2, 3, 4]


@pytest.mark.parametrize(
    ("name", "warning"),
    [
        (
            "fails-in-scalars",
            r"warning: logger 'fails-in-scalars' (from fake-loggers 1.2) raised RuntimeError: "
            r"tracker [bold]unreachable\x1b[2J in scalars; training goes on without it "
            "(metrics.jsonl and the checkpoints are unaffected)",
        ),
        (
            "fails-to-start",
            "warning: logger 'fails-to-start' (from fake-loggers 1.2) could not start "
            "(PermissionError: no token for the tracker); training goes on without it",
        ),
        (
            "fails-to-import",
            "warning: logger 'fails-to-import' (from fake-loggers 1.2) failed to import "
            "(ImportError: No module named 'mlflow'); training goes on without it",
        ),
    ],
)
def test_a_failing_logger_is_named_in_one_warning_and_training_finishes(
    loggers, in_tmp, name, warning
):
    result = runner.invoke(
        app, ["train", "dcgan", *TINY, "--run-dir", "run", "--log", f"{name},recorder"]
    )
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    assert warnings_in(result.output) == [warning]
    lines = logged_lines(in_tmp / "run")
    assert [line["step"] for line in lines] == [1, 2, 3, 4]
    assert sent_steps(in_tmp / "run") == lines  # the other loggers get everything
    assert (in_tmp / "run" / "checkpoint-00000004").is_dir()


@pytest.mark.parametrize(
    ("log", "error"),
    [
        (
            "recorder,nosuch",
            "unknown logger 'nosuch' in --log; installed loggers: changes-what-it-gets, csv, ",
        ),
        ("", "--log takes logger names separated by commas, or none; got ''"),
        ("recorder,none", "--log takes logger names separated by commas, or none"),
        ("recorder,recorder", "--log names 'recorder' more than once"),
    ],
)
def test_a_bad_log_option_is_a_one_line_error_before_training(loggers, in_tmp, log, error):
    result = runner.invoke(app, ["train", "dcgan", *TINY, "--run-dir", "run", "--log", log])
    assert error in one_line_error(result)
    assert not (in_tmp / "run").exists()


def test_a_resumed_run_keeps_its_loggers_unless_log_names_others(loggers, in_tmp):
    first = runner.invoke(
        app, ["train", "dcgan", *TINY, "--epochs", "1", "--run-dir", "run", "--log", "recorder"]
    )
    assert first.exit_code == 0, first.output
    resumed = runner.invoke(app, ["train", "dcgan", "--resume", "--run-dir", "run", "-e", "2"])
    assert resumed.exit_code == 0, resumed.output
    starts = [call for call in recorded(in_tmp / "run") if call["call"] == "start"]
    assert [(call["resumed"], call["start_step"]) for call in starts] == [(False, 0), (True, 2)]
    assert [step["step"] for step in sent_steps(in_tmp / "run")] == [1, 2, 3, 4]

    stopped = runner.invoke(
        app, ["train", "dcgan", "--resume", "--run-dir", "run", "-e", "3", "--log", "none"]
    )
    assert stopped.exit_code == 0, stopped.output
    assert len([call for call in recorded(in_tmp / "run") if call["call"] == "start"]) == 2
    record = json.loads((in_tmp / "run" / "run.json").read_text())
    assert record["training"]["loggers"] == []


def test_a_resumed_run_whose_logger_is_gone_says_how_to_go_on(loggers, in_tmp):
    first = runner.invoke(
        app, ["train", "dcgan", *TINY, "--epochs", "1", "--run-dir", "run", "--log", "recorder"]
    )
    assert first.exit_code == 0, first.output
    run_json = in_tmp / "run" / "run.json"
    record = json.loads(run_json.read_text())
    record["training"]["loggers"] = ["uninstalled"]
    run_json.write_text(json.dumps(record))
    result = runner.invoke(app, ["train", "dcgan", "--resume", "--run-dir", "run", "-e", "2"])
    assert (
        "unknown logger 'uninstalled' in run.json (this run's loggers: choose others with --log)"
    ) in one_line_error(result)


def test_a_replacing_run_logs_into_its_own_folder_once_it_takes_the_old_ones_place(loggers, in_tmp):
    old = runner.invoke(app, ["train", "dcgan", *TINY, "--epochs", "1", "--run-dir", "run"])
    assert old.exit_code == 0, old.output
    result = runner.invoke(
        app, ["train", "dcgan", *TINY, "--run-dir", "run", "--overwrite", "--log", "recorder"]
    )
    assert result.exit_code == 0, result.output
    assert warnings_in(result.output) == []
    assert sent_steps(in_tmp / "run") == logged_lines(in_tmp / "run")


def test_only_the_main_process_logs(tmp_path):
    environment = install_loggers(tmp_path / "site")
    result = subprocess.run(
        [sys.executable, "-m", "gentool", "train", "dcgan", *TINY, "--epochs", "1", "--nproc", "2",
         "--run-dir", str(tmp_path / "run"), "--log", "recorder"],
        env={**environment, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    calls = recorded(tmp_path / "run")
    assert [call["rank"] for call in calls if call["call"] == "start"] == ["0"]
    assert [step["step"] for step in sent_steps(tmp_path / "run")] == [1, 2]


def test_the_logger_in_the_plugin_guide_works_as_shown(tmp_path, monkeypatch, in_tmp):
    guide = (ROOT / "docs" / "plugins.md").read_text()
    pyproject = toml_loads(guide.split("# pyproject.toml\n", 1)[1].split("```", 1)[0])
    module = guide.split("# gentool_best_values.py\n", 1)[1].split("```", 1)[0]
    install_fake_distribution(
        tmp_path / "site", monkeypatch, dist=pyproject["project"]["name"],
        module="gentool_best_values", source=module,
        entry_points=pyproject["project"]["entry-points"][LOGGERS_GROUP], group=LOGGERS_GROUP,
    )  # fmt: skip
    result = runner.invoke(app, ["train", "dcgan", *TINY, "--run-dir", "run", "--log", "best"])
    assert result.exit_code == 0, result.output
    assert warnings_in(result.output) == []
    lines = logged_lines(in_tmp / "run")
    best = json.loads((in_tmp / "run" / "best.json").read_text())
    lowest = min(lines, key=lambda line: line["loss_d"])
    assert best["loss_d"] == {"value": lowest["loss_d"], "step": lowest["step"]}


def test_a_logger_that_changes_what_it_gets_changes_nothing_the_others_get(loggers, in_tmp):
    result = runner.invoke(
        app, ["train", "dcgan", *TINY, "--run-dir", "run", "--log", "changes-what-it-gets,recorder"]
    )
    assert result.exit_code == 0, result.output
    assert "changes-what-it-gets' (from fake-loggers 1.2) raised TypeError" in result.output
    assert sent_steps(in_tmp / "run") == logged_lines(in_tmp / "run")


def test_a_loggers_failing_thread_is_one_warning_line(loggers, in_tmp):
    result = runner.invoke(
        app, ["train", "dcgan", *TINY, "--run-dir", "run", "--log", "thread-fails"]
    )
    assert result.exit_code == 0, result.output
    assert warnings_in(result.output) == [
        "warning: a logger's thread (event-writer) raised OSError: [Errno 30] Read-only file "
        "system; what it had not written is lost, and training goes on"
    ]
    assert "Traceback" not in result.output
