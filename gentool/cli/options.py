"""Options that several commands share, declared once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gentool.devices import DEVICE_CHOICES

DeviceOption = Annotated[str, typer.Option("--device", help=DEVICE_CHOICES)]
RunOption = Annotated[
    Path | None,
    typer.Option("--run", help="Run folder (default: the newest run of NAME under ./runs)"),
]
RawWeightsOption = Annotated[
    bool,
    typer.Option(
        "--raw-weights", help="Runs trained with --ema: the trained, not averaged, weights"
    ),
]
SeedOption = Annotated[
    int,
    typer.Option("--seed", min=0, max=2**63 - 1, help="Seed of the noise: same seed, same images."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
ModelOverridesOption = Annotated[
    list[str],
    typer.Option(
        "--option",
        "-o",
        metavar="KEY=VALUE",
        help="Set a model config field (see `gentool info NAME`); repeatable, the last one wins",
        rich_help_panel="Model config",
    ),
]
