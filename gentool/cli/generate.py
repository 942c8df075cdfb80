"""`gentool sample`, `interpolate`, `reconstruct` and `encode`: images and codes from a run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gentool.cli.app import app, console, user_errors
from gentool.cli.options import DeviceOption, RawWeightsOption, RunOption, SeedOption
from gentool.errors import GentoolError
from gentool.registry import resolve
from gentool.terminal import escaped

ImagesToReadOption = Annotated[
    str | None,
    typer.Option("--data", "-d", help="Images to read (default: the run's own data)"),
]

WalkLabelOption = Annotated[
    str | None,
    typer.Option(
        "--label",
        help="Conditional models: the class to walk in, by index or name (default: the "
        "classes in turn, or the classes of the --from/--to images' folders).",
    ),
]

SampleCountOption = Annotated[
    int,
    typer.Option(
        "--n",
        "-n",
        min=1,
        max=4096,
        help="Number of images (conditional models, by class: rounded down to whole rows).",
    ),
]


@app.command()
@user_errors
def sample(
    name: Annotated[str, typer.Argument(help="Model whose run to sample from.")],
    count: SampleCountOption = 64,
    label: Annotated[
        str | None,
        typer.Option("--label", help="Conditional models: the class to draw, by index or name."),
    ] = None,
    grid_by_class: Annotated[
        bool | None,
        typer.Option(
            "--grid-by-class/--no-grid-by-class",
            help="Conditional models: one row per class (default for them).",
            show_default=False,
        ),
    ] = None,
    run_dir: RunOption = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", help="File to write (default: RUN/samples/sample_seedS_nN.png or .npz)"
        ),
    ] = None,
    output_format: Annotated[
        str,
        typer.Option(
            "--format", help="png (a grid) or npz (the raw images, and labels, as arrays)"
        ),
    ] = "png",
    seed: SeedOption = 0,
    device: DeviceOption = "auto",
    raw_weights: RawWeightsOption = False,
) -> None:
    """Write a grid of new images from a trained model.

    [dim]Examples:
      gentool sample dcgan --n 64 --seed 3 --out faces.png
      gentool sample cgan --label circle --n 16
      gentool sample vae --n 1000 --format npz --out samples.npz[/]
    """
    from gentool.generate import sample_images

    if output_format not in ("png", "npz"):
        raise GentoolError(f"--format must be png or npz, got {output_format!r}")
    written = sample_images(
        resolve(name),
        count=count,
        run_dir=run_dir,
        out=out,
        seed=seed,
        device=device,
        label=label,
        grid_by_class=grid_by_class,
        output_format=output_format,
        raw_weights=raw_weights,
    )
    layout = "" if output_format == "npz" else f" ({written.columns} per row)"
    where = escaped(written.path)
    console.print(f"wrote {written.count} samples{layout} to {where}", highlight=False)


@app.command()
@user_errors
def interpolate(
    name: Annotated[str, typer.Argument(help="Generative model whose run to walk through.")],
    steps: Annotated[
        int, typer.Option("--steps", min=2, max=64, help="Images per row, ends included.")
    ] = 8,
    rows: Annotated[
        int, typer.Option("--rows", min=1, max=64, help="Random code pairs, one per row.")
    ] = 8,
    method: Annotated[
        str, typer.Option("--method", help="lerp (straight) or slerp (spherical)")
    ] = "slerp",
    start_image: Annotated[
        Path | None,
        typer.Option("--from", help="Models that encode: walk from this image's code ..."),
    ] = None,
    end_image: Annotated[
        Path | None, typer.Option("--to", help="... to this image's code.")
    ] = None,
    label: WalkLabelOption = None,
    run_dir: RunOption = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", help="PNG to write (default: RUN/samples/interpolate_METHOD_seedS.png)"
        ),
    ] = None,
    seed: SeedOption = 0,
    device: DeviceOption = "auto",
    raw_weights: RawWeightsOption = False,
) -> None:
    """Walk through a model's latent space: rows of images between pairs of codes.

    [dim]Examples:
      gentool interpolate dcgan --steps 10 --method lerp
      gentool interpolate vae --from a.png --to b.png --steps 12
      gentool interpolate cvae --label 3 --rows 4[/]
    """
    from gentool.generate import interpolate_images

    if method not in ("lerp", "slerp"):
        raise GentoolError(f"--method must be lerp or slerp, got {method!r}")
    written = interpolate_images(
        resolve(name),
        run_dir=run_dir,
        out=out,
        steps=steps,
        rows=rows,
        method=method,
        seed=seed,
        device=device,
        start_image=start_image,
        end_image=end_image,
        label=label,
        raw_weights=raw_weights,
    )
    console.print(
        f"wrote {written.count // written.columns} walks of {written.columns} steps to "
        f"{escaped(written.path)}",
        highlight=False,
    )


@app.command()
@user_errors
def reconstruct(
    name: Annotated[str, typer.Argument(help="Model whose run reconstructs (see gentool list).")],
    run_dir: RunOption = None,
    data: ImagesToReadOption = None,
    count: Annotated[
        int, typer.Option("--n", "-n", min=1, max=1024, help="Number of images.")
    ] = 32,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="PNG to write (default: RUN/samples/reconstruct_nN.png)"),
    ] = None,
    device: DeviceOption = "auto",
    raw_weights: RawWeightsOption = False,
) -> None:
    """Show images above their reconstructions, and print the mean reconstruction error.

    [dim]Example: gentool reconstruct ae --data ./faces --n 32[/]
    """
    from gentool.generate import reconstruct_images

    written, error = reconstruct_images(
        resolve(name), run_dir=run_dir, data=data, count=count, out=out, device=device,
        raw_weights=raw_weights,
    )  # fmt: skip
    console.print(
        f"mean squared error {error:.5f} (pixels in [0, 1]) over {written.count} images; "
        f"originals above reconstructions in {escaped(written.path)}",
        highlight=False,
    )


@app.command()
@user_errors
def encode(
    name: Annotated[str, typer.Argument(help="Model whose run encodes (see gentool list).")],
    out: Annotated[Path, typer.Option("--out", help="safetensors file to write the codes to")],
    data: ImagesToReadOption = None,
    run_dir: RunOption = None,
    batch_size: Annotated[
        int, typer.Option("--batch-size", "-b", min=1, help="Images per batch")
    ] = 256,
    device: DeviceOption = "auto",
    raw_weights: RawWeightsOption = False,
) -> None:
    """Encode a dataset into codes (and its labels), as features for other tools.

    The file holds "codes" (N, ...) as the model makes them (float32, or int64 for discrete
    codes) and, for labelled data, "labels" (N,) int64; its metadata names the model, the run,
    the data and the class names. Conditional models encode each image with its class.

    [dim]Example: gentool encode ae --data ./faces --out codes.safetensors[/]
    """
    from gentool.generate import encode_images

    path, count, shape = encode_images(
        resolve(name), run_dir=run_dir, data=data, out=out, batch_size=batch_size, device=device,
        raw_weights=raw_weights,
    )  # fmt: skip
    shown = "×".join(map(str, shape))
    console.print(f"wrote {count} codes of shape ({shown}) to {escaped(path)}", highlight=False)
