"""`gentool export`: a run's decoder or encoder as a file that runs without gentool."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from gentool.cli.app import app, console, user_errors
from gentool.cli.options import RawWeightsOption, RunOption
from gentool.registry import resolve
from gentool.terminal import escaped

if TYPE_CHECKING:
    from gentool.export import Exported


@app.command()
@user_errors
def export(
    name: Annotated[str, typer.Argument(help="Model whose run to export.")],
    export_format: Annotated[
        str,
        typer.Option(
            "--format",
            help="onnx, exported (torch.export's .pt2) or torchscript (torch.jit's .pt)",
        ),
    ],
    out: Annotated[
        Path, typer.Option("--out", help="File to write; its description goes to FILE.json")
    ],
    part: Annotated[
        str,
        typer.Option(
            "--part",
            help="decoder (codes, and labels, to images; a GAN's generator) or encoder "
            "(images to codes, for models that encode)",
        ),
    ] = "decoder",
    run_dir: RunOption = None,
    raw_weights: RawWeightsOption = False,
) -> None:
    """Export a trained network, with a dynamic batch size, checked against the model.

    The file is loaded back and run on a batch of another size than the one it was traced
    with; its largest difference from the model is printed with the tolerance. FILE.json
    says the inputs and output (names, shapes, dtypes, value range), the class names and
    the run. ONNX needs `pip install "gentool\\[export]"`.

    [dim]Examples:
      gentool export dcgan --format onnx --out generator.onnx
      gentool export cgan --format exported --out generator.pt2
      gentool export vae --part encoder --format torchscript --out encoder.pt[/]
    """
    from gentool.export import export_part

    exported = export_part(
        resolve(name),
        part=part,
        export_format=export_format,
        out=out,
        run_dir=run_dir,
        raw_weights=raw_weights,
    )
    _show(exported)


def _show(exported: Exported) -> None:
    """Three lines: what was written where, what goes in and out, and how it compared."""
    description, check = exported.description, exported.check
    inputs = ", ".join(_shown_tensor(tensor) for tensor in description["inputs"])
    console.print(
        f"wrote {description['model']}'s {description['part']} as {description['format']} to "
        f"{escaped(exported.path)} "
        f"in {exported.seconds:.1f} s, described in {escaped(exported.description_path)}",
        highlight=False,
    )
    output = _shown_tensor(description["output"])
    console.print(escaped(f"inputs {inputs}; output {output}"), highlight=False)
    if check.difference is None:
        console.print(
            escaped(f"checked with {check.runtime} only: {check.not_run}"), highlight=False
        )
        return
    console.print(
        f"checked with {escaped(check.runtime)} on a batch of {description['check']['batch']}: "
        f"max |difference| {check.difference:.1e} (tolerance {check.tolerance:.1e})",
        highlight=False,
    )


def _shown_tensor(tensor: dict[str, Any]) -> str:
    shape = ", ".join(str(size) for size in tensor["shape"])
    value_range = tensor.get("value_range")
    within = f" in [{value_range[0]:g}, {value_range[1]:g}]" if value_range else ""
    return f"{tensor['name']} ({shape}) {tensor['dtype']}{within}"
