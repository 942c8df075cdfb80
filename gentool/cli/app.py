"""The `gentool` application: its command groups, consoles, and how errors are shown.

Start-up stays light: this package imports only Typer, Rich and the plugin registry, whose
plugins do not import torch. Commands that compute import torch inside their bodies, so
`gentool --help`, `gentool list` and `gentool info NAME` answer without loading it.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import typer

from gentool import __version__
from gentool.errors import GentoolError, Interrupted
from gentool.interrupts import EXIT_INTERRUPTED, interrupted
from gentool.launcher import PROCESS_ERRORS
from gentool.terminal import StreamConsole, escaped

app = typer.Typer(
    name="gentool",
    help="Train, sample and inspect image generative models: autoencoders, VAEs and GANs.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
data_app = typer.Typer(help="Work with datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")
plugin_app = typer.Typer(help="Write and check model plugins.", no_args_is_help=True)
app.add_typer(plugin_app, name="plugin")
bench_app = typer.Typer(
    help="Check and time fused kernels and training steps.", no_args_is_help=True
)
app.add_typer(bench_app, name="bench")

console = StreamConsole(soft_wrap=True)
error_console = StreamConsole(stderr=True, soft_wrap=True)

Command = TypeVar("Command", bound=Callable[..., Any])

EXIT_USER_ERROR = 1
EXIT_READER_GONE = 141  # 128 + SIGPIPE: how a shell reports a tool whose pipe's reader left


def user_errors(command: Command) -> Command:
    """Print a GentoolError as one line and exit 1 (130 for an interruption), never a traceback.
    How a command whose standard output was lost ends is `run_commands`' to say, once."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            try:
                return command(*args, **kwargs)
            except Interrupted as error:  # training stopped by a signal, its checkpoint saved
                if os.environ.get("RANK", "0") == "0":  # rank 0 says it once
                    error_console.print(f"[yellow]stopped:[/] {escaped(error)}", highlight=False)
                raise typer.Exit(EXIT_INTERRUPTED) from None
            except KeyboardInterrupt:  # a second Ctrl-C: stop at once; saved checkpoints are intact
                abort()
            except (GentoolError, OSError) as error:
                if interrupted():  # what a Ctrl-C that an import swallowed broke later
                    abort()
                # An OSError: the file system refused (a full disk, a read-only folder).
                shown = describe_os_error(error) if isinstance(error, OSError) else str(error)
                report_error(shown)
                raise typer.Exit(EXIT_USER_ERROR) from None

    return wrapper  # type: ignore[return-value]


def report_error(message: str) -> None:
    """Print an error as one line; a process of `train --nproc` leaves it for `gentool train`,
    which shows one line for them all (the processes of one failure say it each in their way)."""
    folder = os.environ.get(PROCESS_ERRORS)
    if folder:
        with contextlib.suppress(OSError):  # unwritable: said on standard error as ever
            Path(folder, f"rank-{os.environ.get('RANK', '0')}").write_text(message)
            return
    error_console.print(f"[red]error:[/] {escaped(message)}", highlight=False)


def abort() -> NoReturn:
    """End the command at once, as Ctrl-C asked: saved checkpoints are intact."""
    error_console.print("[yellow]aborted[/]")
    sys.exit(EXIT_INTERRUPTED)  # not typer.Exit: also said where Typer no longer runs


def describe_os_error(error: OSError) -> str:
    """A file system's refusal in one line: which file, why, what to do."""
    where = f"{error.filename}: " if error.filename else ""
    return (
        f"{where}{error.strerror or error} (check the path, and that its disk is writable and "
        "has space)"
    )


def exit_if_output_lost() -> None:
    """End a command whose standard output stopped taking what it printed: quietly when the
    pipe's reader left (`gentool list | head -1`), as other tools do; with an error otherwise,
    since what it printed is incomplete."""
    lost = console.lost
    if lost is None:
        return
    if lost.errno == errno.EPIPE:
        sys.exit(EXIT_READER_GONE)
    error_console.print(
        f"[red]error:[/] could not write to standard output: {lost.strerror or lost}",
        highlight=False,
    )
    sys.exit(EXIT_USER_ERROR)  # not typer.Exit: also said where Typer no longer runs


def _show_warning(
    message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any
) -> None:
    error_console.print(f"[yellow]warning:[/] {escaped(message)}", highlight=False)


def _version(value: bool) -> None:
    if value:
        console.print(f"gentool {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Train, sample and inspect image generative models: autoencoders, VAEs and GANs.

    [dim]Example: gentool train dcgan --epochs 5 && gentool sample dcgan --n 64[/]
    """


def choice(option: str, value: str, choices: Any) -> Any:
    """`choices[value]`, or a one-line error naming `option` and what it accepts."""
    if value not in choices:
        raise GentoolError(f"{option} must be one of {', '.join(choices)}; got {value!r}")
    return choices[value]


def shown_number(value: float | None, template: str) -> str:
    return "–" if value is None else template.format(value)
