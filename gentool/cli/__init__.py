"""The `gentool` command line: one module per group of commands, each a thin caller of the
package that does the work (training, generation, evaluation, kernels). `app` is the Typer
application, `main` the console script."""

# Imported in the order `gentool --help` lists their commands.
from gentool.cli import train  # isort: skip
from gentool.cli import generate  # isort: skip
from gentool.cli import evaluate  # isort: skip
from gentool.cli import catalog  # isort: skip
from gentool.cli import bench  # isort: skip
from gentool.cli.app import app

__all__ = ["app", "bench", "catalog", "evaluate", "generate", "main", "train"]


def main() -> None:
    app()
