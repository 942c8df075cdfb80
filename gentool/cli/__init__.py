"""The `gentool` command line: one module per group of commands, each a thin caller of the
package that does the work (training, generation, evaluation, kernels). `app` is the Typer
application, `run_commands` what the console script runs (see gentool.__main__)."""

import sys

# Imported in the order `gentool --help` lists their commands.
from gentool.cli import train  # isort: skip
from gentool.cli import generate  # isort: skip
from gentool.cli import export  # isort: skip
from gentool.cli import evaluate  # isort: skip
from gentool.cli import catalog  # isort: skip
from gentool.cli import bench  # isort: skip
from gentool.cli.app import abort, app, exit_if_output_lost
from gentool.interrupts import interrupted
from gentool.terminal import GuardedOutput

__all__ = [
    "app",
    "bench",
    "catalog",
    "evaluate",
    "export",
    "generate",
    "run_commands",
    "train",
]


def run_commands() -> None:
    """The command line asked for, with its output made safe for any terminal or stream."""
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):  # an ASCII terminal shows `–` as \u2013, not a crash
            stream.reconfigure(errors="backslashreplace")
    sys.stdout, sys.stderr = GuardedOutput(sys.stdout), GuardedOutput(sys.stderr)
    try:
        app()
    except SystemExit as ending:
        if not ending.code:  # done; Typer's own help and usage errors say so too
            exit_if_output_lost()
        raise
    except Exception:
        if not interrupted():
            raise
        # What an import that swallowed the Ctrl-C broke on later is not the user's concern.
        abort()
