"""`gentool eval` and `gentool report`: how good a run is, and a page about it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from gentool.cli.app import app, console, user_errors
from gentool.cli.options import DeviceOption, JsonOption, RawWeightsOption, RunOption, SeedOption
from gentool.registry import resolve
from gentool.terminal import escaped

RealImagesOption = Annotated[
    str | None,
    typer.Option("--data", "-d", help="Real images to compare with (default: the run's own data)"),
]
CountOption = Annotated[
    int,
    typer.Option(
        "--n", "-n", min=10, help="Generated and real images compared (and reconstructed)"
    ),
]
MetricsOption = Annotated[
    str | None,
    typer.Option(
        "--metrics",
        help="Comma-separated: fid, kid, pr (precision/recall), recon (MSE, PSNR, SSIM) "
        "(default: all that the model can do)",
    ),
]
FeaturesOption = Annotated[
    str,
    typer.Option(
        "--features",
        help="builtin (a small network for the built-in data; offline) or inception "
        "(Inception-v3 via torch-fidelity)",
    ),
]


@app.command("eval")
@user_errors
def evaluate(
    name: Annotated[str, typer.Argument(help="Model whose run to evaluate.")],
    run_dir: RunOption = None,
    data: RealImagesOption = None,
    count: CountOption = 5000,
    metrics: MetricsOption = None,
    features: FeaturesOption = "builtin",
    seed: SeedOption = 0,
    device: DeviceOption = "auto",
    raw_weights: RawWeightsOption = False,
    as_json: JsonOption = False,
) -> None:
    """Measure how good a trained model is: FID, KID, precision/recall, reconstruction error.

    The values are also appended to the run's metrics.jsonl. The real images' statistics are
    cached, so evaluating again against the same data is quicker.

    [dim]Examples:
      gentool eval dcgan --n 5000
      gentool eval vae --metrics fid,recon --json
      gentool eval dcgan --features inception --data ./faces[/]
    """
    from gentool.evaluate import EvalSettings, evaluate_run, parse_metrics

    entry = resolve(name)
    settings = EvalSettings(
        metrics=parse_metrics(metrics, entry.plugin), n=count, features=features, seed=seed
    )
    result = evaluate_run(
        entry, run_dir=run_dir, data=data, settings=settings, device=device, raw_weights=raw_weights
    )
    if as_json:
        console.print_json(json.dumps({"run": str(result.run), **result.values}))
        return
    title = escaped(f"{entry.name} · {result.run} · epoch {result.epoch} · n {count} · {features}")
    table = Table("metric", "value", title=title)
    for key, value in result.values.items():
        if key not in ("event", "n", "features"):
            table.add_row(key, f"{value:.5g}" if isinstance(value, float) else str(value))
    console.print(table)
    cached = {True: " (real statistics from the cache)", False: "", None: ""}[result.cache_hit]
    console.print(f"appended to {escaped(result.run.metrics_file)}{cached}", highlight=False)


@app.command()
@user_errors
def report(
    run_dir: Annotated[Path, typer.Argument(help="Run folder to report on.")],
    out: Annotated[
        Path | None, typer.Option("--out", help="HTML file (default: RUN/report.html)")
    ] = None,
    device: DeviceOption = "auto",
) -> None:
    """Write one self-contained HTML page about a run: config, data, timing, loss and metric
    curves, sample grids over the epochs and, for models that reconstruct, reconstructions.

    [dim]Example: gentool report runs/dcgan/2026-11-27_10-32-00 && xdg-open
    runs/dcgan/2026-11-27_10-32-00/report.html[/]
    """
    from gentool.checkpoint import RunFolder
    from gentool.report import write_report
    from gentool.run_files import output_path

    if out is not None:
        out = output_path(out)
    run = RunFolder(run_dir)
    record = run.read()
    entry = resolve(record.plugin.name)
    if entry.plugin.capabilities.reconstruct and not run.reconstruction_files():
        from gentool.generate import reconstruct_images

        reconstruct_images(entry, run_dir=run.path, data=None, count=16, out=None, device=device)
    path = write_report(run, record, out)
    console.print(f"wrote {escaped(path)}", highlight=False)
