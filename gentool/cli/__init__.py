"""The `gentool` command line: one module per group of commands, each a thin caller of the
package that does the work (training, generation, evaluation, kernels). `app` is the Typer
application, `run_commands` what the console script runs (see gentool.__main__)."""

import sys

# Imported in the order `gentool --help` lists their commands.
from gentool.cli import train  # isort: skip
from gentool.cli import generate  # isort: skip
from gentool.cli import evaluate  # isort: skip
from gentool.cli import catalog  # isort: skip
from gentool.cli import bench  # isort: skip
from gentool.cli.app import EXIT_USER_ERROR, abort, app, error_console
from gentool.interrupts import interrupted
from gentool.terminal import discard_output

__all__ = ["app", "bench", "catalog", "evaluate", "generate", "run_commands", "train"]


def run_commands() -> None:
    """The command line asked for, with its output made safe for any terminal or stream."""
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):  # an ASCII terminal shows `–` as \u2013, not a crash
            stream.reconfigure(errors="backslashreplace")
    try:
        app()
    except OSError as error:  # Typer's own output (help, a usage error) to a stream refusing it
        discard_output(sys.stdout)
        error_console.print(
            f"[red]error:[/] could not write to standard output: {error.strerror or error}",
            highlight=False,
        )
        sys.exit(EXIT_USER_ERROR)
    except Exception:
        if not interrupted():
            raise
        # What an import that swallowed the Ctrl-C broke on later is not the user's concern.
        abort()
