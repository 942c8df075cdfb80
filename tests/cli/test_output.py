"""What gentool prints, wherever it goes: a pipe whose reader left, a full disk, a terminal that
went away, an ASCII terminal; and names that are not UTF-8, or that hold escape sequences."""

from __future__ import annotations

import errno
import io
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from gentool.checkpoint import RunFolder
from gentool.cli import app
from gentool.terminal import StreamConsole
from gentool.training.display import TrainingDisplay
from tests.conftest import TINY_DCGAN_ARGS, install_fake_distribution, install_for_subprocess

TRAIN_TINY = ["train", "dcgan", *TINY_DCGAN_ARGS, "--limit", "32", "-b", "16", "--device", "cpu"]
TRAIN_TWO_EPOCHS = [*TRAIN_TINY, "--epochs", "2", "--run-dir", "run"]  # 2 steps an epoch
needs_dev_full = pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full here")


@contextmanager
def refusing_output(kind: str) -> Iterator[int]:
    """A file descriptor whose writes fail: a pipe whose reader left, or a full disk."""
    if kind == "reader gone":
        reader, writer = os.pipe()
        os.close(reader)
    else:
        writer = os.open("/dev/full", os.O_WRONLY)
    try:
        yield writer
    finally:
        os.close(writer)


def gentool(
    *args: str, stdout: int = subprocess.PIPE, cwd: Path | None = None, **environment: str
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gentool", *args], stdout=stdout, stderr=subprocess.PIPE,
        text=True, cwd=cwd, env={**os.environ, **environment}, timeout=300,
    )  # fmt: skip


@pytest.mark.parametrize("args", [["list"], ["list", "--json"], ["info", "dcgan"], ["--version"]])
def test_a_command_ends_quietly_when_the_reader_of_its_output_is_gone(args):
    with refusing_output("reader gone") as stdout:
        result = gentool(*args, stdout=stdout)
    assert (result.returncode, result.stderr) == (141, "")


def test_a_terminal_width_of_zero_columns_still_shows_errors_and_output():
    unknown = gentool("info", "nosuch", COLUMNS="0")
    assert unknown.returncode == 1 and unknown.stderr.startswith("error: unknown model 'nosuch'")
    assert "dcgan" in gentool("list", COLUMNS="0").stdout


def test_a_closed_standard_output_trains_as_if_it_were_dev_null(tmp_path):
    # `>&-`: the next file opened would take descriptor 1, and what is printed would land in it.
    result = subprocess.run(
        [sys.executable, "-m", "gentool", *TRAIN_TWO_EPOCHS], capture_output=True, text=True,
        cwd=tmp_path, timeout=300,
        preexec_fn=lambda: os.close(1),
    )  # fmt: skip
    assert (result.returncode, result.stderr) == (0, "")
    record = RunFolder(tmp_path / "run").read()
    assert record.progress.epoch == 2
    files = [path for path in (tmp_path / "run").rglob("*") if path.is_file()]
    assert not any(b"done: 2 epochs" in path.read_bytes() for path in files)


@needs_dev_full
@pytest.mark.parametrize("args", [["list"], ["info", "dcgan"], ["--version"], ["--help"]])
def test_output_to_a_full_disk_is_one_line_on_stderr_not_a_traceback(args):
    with refusing_output("full disk") as stdout:
        result = gentool(*args, stdout=stdout)
    assert result.returncode == 1
    assert result.stderr == "error: could not write to standard output: No space left on device\n"


@needs_dev_full
@pytest.mark.parametrize(
    ("kind", "exit_code", "said"),
    [
        ("reader gone", 141, ""),
        ("full disk", 1, "error: could not write to standard output: No space left on device\n"),
    ],
)
def test_training_goes_on_and_checkpoints_when_its_output_cannot_be_written(
    tmp_path, kind, exit_code, said
):
    with refusing_output(kind) as stdout:
        result = gentool(*TRAIN_TWO_EPOCHS, stdout=stdout, cwd=tmp_path)
    assert (result.returncode, result.stderr) == (exit_code, said)
    assert RunFolder(tmp_path / "run").read().progress.epoch == 2
    assert (tmp_path / "run" / "checkpoint-00000004").is_dir()


CHATTY_PLUGIN = """
from dataclasses import replace
from gentool.plugins.dcgan import plugin as dcgan
from gentool.plugins.dcgan.model import DCGAN

class Chatty(DCGAN):
    def training_step(self, batch, context):
        print("a plugin's progress note")
        return super().training_step(batch, context)

plugin = replace(dcgan, name="chatty", build=lambda config, spec: Chatty(config, spec))
"""


@pytest.mark.parametrize("kind", ["reader gone", "full disk"])
def test_a_plugin_printing_to_output_that_stopped_keeps_training(tmp_path, kind):
    environment = install_for_subprocess(
        tmp_path / "site", module="chatty", source=CHATTY_PLUGIN,
        entry_points={"chatty": "chatty:plugin"},
    )  # fmt: skip
    arguments = ["train", "chatty", *TRAIN_TWO_EPOCHS[2:]]
    with refusing_output(kind) as stdout:
        result = gentool(
            *arguments, stdout=stdout, cwd=tmp_path, PYTHONPATH=environment["PYTHONPATH"]
        )
    assert result.returncode == (141 if kind == "reader gone" else 1), result.stderr
    assert "raised" not in result.stderr
    assert RunFolder(tmp_path / "run").read().progress.epoch == 2


class VanishedTerminal(io.StringIO):
    def write(self, text: str) -> int:
        raise OSError(errno.EIO, os.strerror(errno.EIO))


def test_a_progress_bar_on_a_terminal_that_went_away_stops_drawing_and_training_goes_on():
    console = StreamConsole(file=VanishedTerminal(), force_terminal=True)
    with TrainingDisplay(console) as display:
        assert display.progress is not None
        display.start_epoch(0, 1, steps=2, done=0)
        display.advance()
        display.show_values([{"loss": 0.5}])
        display.end_epoch()
    assert console.lost is not None and console.lost.errno == errno.EIO


ASCII_TERMINALS = {
    "PYTHONIOENCODING=ascii": {"PYTHONIOENCODING": "ascii"},
    "LC_ALL=C": {"LC_ALL": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"},
}


@pytest.mark.parametrize("environment", ASCII_TERMINALS.values(), ids=ASCII_TERMINALS)
def test_an_ascii_terminal_shows_what_it_cannot_encode_as_escapes(environment):
    info = gentool("info", "dcgan", **environment)
    assert info.returncode == 0, info.stderr
    assert "dcgan \\u2014 Deep convolutional GAN" in info.stdout
    helped = gentool("sample", "--help", **environment)
    assert helped.returncode == 0, helped.stderr


def test_a_folder_name_that_is_not_utf8_is_shown_escaped(tmp_path):
    made = gentool("data", "make", "shapes", os.fsdecode(b"shapes\xff"), "--n", "2", "--size", "8",
                   cwd=tmp_path)  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert made.stdout == "wrote 2 shapes images (8×8) to shapes\\xff\n"
    assert (tmp_path / os.fsdecode(b"shapes\xff")).is_dir()


def test_a_run_in_a_folder_not_named_in_utf8_draws_its_loss_plot_and_report(tmp_path):
    folder = os.fsdecode(b"run\xff")
    trained = gentool(*TRAIN_TINY, "--epochs", "1", "--run-dir", folder, cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    assert (tmp_path / folder / "loss.png").stat().st_size > 0
    reported = gentool("report", folder, cwd=tmp_path)
    assert reported.returncode == 0, reported.stderr
    page = (tmp_path / folder / "report.html").read_text(encoding="utf-8")
    assert "<h1>dcgan · run\\xff</h1>" in page


# Clears the screen, retitles the window, rings, and returns to overwrite the line; and markup.
HOSTILE = "\x1b[2J\x1b]0;owned\x07[red]wiped[/]\r"
HOSTILE_SHOWN = "\\x1b[2J\\x1b]0;owned\\x07[red]wiped[/]\\r"


def assert_inert(output: str) -> None:
    assert not {"\x1b", "\x07", "\r"} & set(output), repr(output)


def install_plugin(tmp_path, monkeypatch, name: str, body: str) -> str:
    """A distribution whose plugin `name` is dcgan renamed, after `body` runs at its import; its
    distribution's name."""
    module = f"hostile_{name.replace('-', '_')}_{tmp_path.name}"
    source = (
        f"from dataclasses import replace\nfrom gentool.plugins.dcgan import plugin as dcgan\n"
        f"{body}\nplugin = replace(dcgan, name={name!r}, summary={HOSTILE!r})\n"
    )
    install_fake_distribution(
        tmp_path / "site", monkeypatch, dist=f"{module}-dist", module=module, source=source,
        entry_points={name: f"{module}:plugin"},
    )  # fmt: skip
    return f"{module}-dist"


def test_a_plugins_text_reaches_the_terminal_escaped_never_as_control_or_markup(
    tmp_path, monkeypatch
):
    install_plugin(tmp_path, monkeypatch, "hostile", "")
    runner = CliRunner()
    info = runner.invoke(app, ["info", "hostile"])
    assert info.exit_code == 0, info.output
    assert_inert(info.output)
    assert info.output.startswith(f"hostile — {HOSTILE_SHOWN}\n")
    listed = runner.invoke(app, ["list"])
    assert listed.exit_code == 0, listed.output
    assert_inert(listed.output)


def test_a_broken_plugins_error_is_one_inert_line_as_an_error_and_as_a_warning(
    tmp_path, monkeypatch
):
    message = HOSTILE.removesuffix("\r")  # an exception is shown by its first line
    body = f"raise RuntimeError({message!r})"
    distribution = install_plugin(tmp_path, monkeypatch, "dcgan", body)
    shown = HOSTILE_SHOWN.removesuffix("\\r")
    runner = CliRunner()
    warned = runner.invoke(app, ["info", "dcgan"])  # the working dcgan, and a warning
    assert warned.exit_code == 0, warned.output
    assert_inert(warned.output)
    (warning,) = [line for line in warned.output.splitlines() if line.startswith("warning:")]
    assert warning.endswith(f"is broken (RuntimeError: {shown}); using gentool:dcgan")
    asked = runner.invoke(app, ["info", f"{distribution}:dcgan"])
    assert asked.exit_code == 1
    assert_inert(asked.output)
    assert asked.output.endswith(f"is broken: RuntimeError: {shown}\n")


def test_an_unknown_name_is_quoted_in_the_error_not_read_as_markup():
    result = CliRunner().invoke(app, ["info", "[bold]x"])
    assert result.exit_code == 1
    assert result.output.startswith("error: unknown model '[bold]x'; available models: ")


def test_training_shows_a_models_value_and_phase_names_escaped():
    written = io.StringIO()
    with TrainingDisplay(Console(file=written, width=300)) as display:
        display.start_epoch(0, 1, steps=1, done=0, phase=f"phase{HOSTILE}")
        display.advance()
        display.show_values([{f"loss{HOSTILE}": 0.5}])
        display.end_epoch()
    assert_inert(written.getvalue())
    assert written.getvalue().startswith(
        f"epoch 1/1 · phase{HOSTILE_SHOWN}: loss{HOSTILE_SHOWN} 0.5  (1 step,"
    )


def test_emoji_codes_in_names_are_shown_as_written(in_tmp):
    result = CliRunner().invoke(app, ["sample", "dcgan", "--run", ":fire:/x"])
    assert result.exit_code == 1
    assert ":fire:/x" in result.output and "\U0001f525" not in result.output
