"""`gentool eval`, `gentool fid` and `gentool report`: how good a run or an image set is, and a
page about a run."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from gentool.cli.app import app, console, error_console, user_errors
from gentool.cli.options import DeviceOption, JsonOption, RawWeightsOption, RunOption, SeedOption
from gentool.errors import GentoolError
from gentool.progress import Tracker, progress_bars
from gentool.registry import resolve
from gentool.terminal import escaped

if TYPE_CHECKING:
    from gentool.fid import Comparison

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
        help="Comma-separated: fid, kid, pr (precision/recall), recon (MSE, PSNR, SSIM), labels "
        "(label accuracy of a conditional model on the built-in shapes) (default: all that the "
        "model can do)",
    ),
]
FeaturesOption = Annotated[
    str,
    typer.Option(
        "--features",
        help="builtin (a small network for the built-in data) or inception (Inception-v3, "
        'the features papers quote FID in: pip install "gentool\\[inception]")',
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
        metrics=parse_metrics(metrics, entry.plugin), n=count, features=features, seed=seed,
        chosen=metrics is not None,
    )  # fmt: skip
    with feature_progress() as track:
        result = evaluate_run(
            entry, run_dir=run_dir, data=data, settings=settings, device=device,
            raw_weights=raw_weights, track=track,
        )  # fmt: skip
    if as_json:
        console.print_json(json.dumps({"run": str(result.run), **result.values}))
        return
    title = f"{entry.name} · {result.run} · epoch {result.epoch} · n {count} · {features}"
    shown = {key: value for key, value in result.values.items() if key not in ("event", "n")}
    for name, accuracy in shown.pop("label_accuracy_by_class", {}).items():
        shown[f"label_accuracy {name}"] = accuracy
    console.print(_metrics_table(title, shown))
    if result.values.get("sampler") == "baseline":
        console.print(
            f"note: {escaped(entry.name)} samples with a baseline sampler (see gentool info "
            f"{escaped(entry.name)}): fid, kid and pr measure that baseline, not a learned prior",
            highlight=False,
        )
    cached = {True: " (real statistics from the cache)", False: "", None: ""}[result.cache_hit]
    console.print(f"appended to {escaped(result.run.metrics_file)}{cached}", highlight=False)


FirstSetArgument = Annotated[
    str,
    typer.Argument(
        help="The reference set: a folder of images, a run folder, an .npz of images or of saved "
        "statistics, or builtin:faces / builtin:shapes",
        show_default=False,
    ),
]
SecondSetArgument = Annotated[
    str | None, typer.Argument(help="The set to measure against it (any of the same kinds)")
]
SetFeaturesOption = Annotated[
    str,
    typer.Option(
        "--features",
        help='inception (the features papers quote FID in: pip install "gentool\\[inception]") '
        "or builtin (a small network for the built-in data)",
    ),
]
SetCountOption = Annotated[
    int | None,
    typer.Option(
        "--n",
        "-n",
        help="At most this many images of each set (a run draws this many; by default as many "
        "as the other set has)",
        show_default=False,
    ),
]
SetMetricsOption = Annotated[
    str | None,
    typer.Option("--metrics", help="Besides FID, comma-separated: kid, pr (precision/recall)"),
]
SaveStatsOption = Annotated[
    Path | None,
    typer.Option(
        "--save-stats",
        help="Save the first set's statistics to this .npz, to give instead of the set next time",
        show_default=False,
    ),
]
ImageSizeOption = Annotated[
    int | None,
    typer.Option(
        "--image-size",
        min=1,
        help="Fit every image to this size first (shorter side resized, centre cropped); "
        "needed when a folder mixes sizes",
        show_default=False,
    ),
]


@app.command("fid")
@user_errors
def fid(
    first: FirstSetArgument,
    second: SecondSetArgument = None,
    features: SetFeaturesOption = "inception",
    count: SetCountOption = None,
    metrics: SetMetricsOption = None,
    save_stats: SaveStatsOption = None,
    image_size: ImageSizeOption = None,
    seed: SeedOption = 0,
    device: DeviceOption = "auto",
    raw_weights: RawWeightsOption = False,
    as_json: JsonOption = False,
) -> None:
    """FID between two image sets, whatever made them; KID and precision/recall on request.

    Each set is read once: the statistics of folders and image files are cached, and
    --save-stats keeps a set's statistics in a file to give instead of the set (pytorch-fid's
    files, with `mu` and `sigma`, are read too). Precision is the share of the second set inside
    the first one's manifold; recall the reverse.

    [dim]Examples:
      gentool fid ./real ./generated
      gentool fid ./real runs/dcgan/demo --n 5000 --metrics kid,pr
      gentool fid ./real --save-stats real.npz && gentool fid real.npz ./generated --json[/]
    """
    from gentool.devices import resolve_device
    from gentool.fid import FidSettings, compare_sets, parse_fid_metrics

    if second is None and save_stats is None:
        raise GentoolError("give two image sets to compare, or --save-stats FILE.npz to keep one")
    if save_stats is not None:
        save_stats = statistics_path(save_stats, [first, second])
    settings = FidSettings(
        metrics=parse_fid_metrics(metrics), features=features, n=count, image_size=image_size,
        seed=seed, raw_weights=raw_weights,
    )  # fmt: skip
    with feature_progress() as track:
        comparison = compare_sets(
            first, second, settings, device=resolve_device(device), save_statistics=save_stats,
            track=track,
        )  # fmt: skip
    _say_comparison(comparison, features, save_stats, as_json)


def statistics_path(path: Path, sources: list[str | None]) -> Path:
    """Where --save-stats writes: a regular .npz file that is none of the sets compared."""
    from gentool.run_files import file_output_path

    if path.suffix.lower() != ".npz":
        raise GentoolError(f"--save-stats writes an .npz file: name it {path}.npz")
    target = file_output_path(path, "--save-stats")
    for source in filter(None, sources):
        named = Path(source).expanduser()
        if target.exists() and named.exists() and os.path.samefile(target, named):
            raise GentoolError(
                f"--save-stats {path} is {source}, a set being compared: saving there would "
                "destroy it; name another file"
            )
    return target


def _say_comparison(
    comparison: Comparison, features: str, saved: Path | None, as_json: bool
) -> None:
    if as_json:
        document = {
            **comparison.values,
            "features": features,
            "sets": [image_set.describe() for image_set in comparison.sets],
            **({"saved_statistics": str(saved)} if saved else {}),
        }
        console.print_json(json.dumps(document))
        return
    for label, image_set in zip("AB", comparison.sets, strict=False):
        held = "images" if image_set.kind != "statistics" else "images' statistics"
        counted = f"{image_set.count} {held}" if image_set.count else "statistics"
        cached = " (statistics from the cache)" if image_set.cache_hit else ""
        console.print(f"{label}: {escaped(image_set.source)}, {counted}{cached}", highlight=False)
    if comparison.values:
        console.print(_metrics_table(f"{features} features", comparison.values))
    if saved is not None:
        console.print(f"saved A's statistics to {escaped(saved)}", highlight=False)


def _metrics_table(title: str, values: dict[str, Any]) -> Table:
    table = Table("metric", "value", title=escaped(title))
    for key, value in values.items():
        table.add_row(escaped(key), f"{value:.5g}" if isinstance(value, float) else escaped(value))
    return table


def feature_progress() -> contextlib.AbstractContextManager[Tracker | None]:
    """A progress bar per feature extraction, on standard error: Inception on a CPU takes a
    tenth of a second an image."""
    return progress_bars(error_console, "images")


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
