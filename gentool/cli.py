"""The `gentool` command line.

Start-up stays light: this module imports only Typer, Rich and the plugin registry, whose plugins
do not import torch. Commands that compute import torch inside their bodies, so `gentool --help`,
`gentool list` and `gentool info NAME` answer without loading it.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from gentool import __version__
from gentool.config import config_to_dict, parse_assignment, toml_load_file
from gentool.errors import ConfigError, GentoolError, Interrupted
from gentool.registry import PluginEntry, clashing_names, discover, resolve

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

console = Console(soft_wrap=True)
error_console = Console(stderr=True, soft_wrap=True)

Command = TypeVar("Command", bound=Callable[..., Any])

EXIT_USER_ERROR = 1
EXIT_INTERRUPTED = 130
DATA_PANEL = "Data"
TRAINING_PANEL = "Training"
MODEL_PANEL = "Model config"
RUN_PANEL = "Run folder"
SCALE_PANEL = "Speed and scale"
EVAL_PANEL = "Evaluation"


def user_errors(command: Command) -> Command:
    """Print a GentoolError as one line and exit 1 (130 for an interruption), never a traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            try:
                return command(*args, **kwargs)
            except GentoolError as error:
                from_signal = isinstance(error, Interrupted)
                if from_signal and os.environ.get("RANK", "0") != "0":  # rank 0 says it once
                    raise typer.Exit(EXIT_INTERRUPTED) from None
                style = "yellow" if from_signal else "red"
                label = "stopped" if from_signal else "error"
                error_console.print(f"[{style}]{label}:[/] {error}", highlight=False)
                raise typer.Exit(EXIT_INTERRUPTED if from_signal else EXIT_USER_ERROR) from None
            except KeyboardInterrupt:  # a second Ctrl-C: stop at once; saved checkpoints are intact
                error_console.print("[yellow]aborted[/]")
                raise typer.Exit(EXIT_INTERRUPTED) from None

    return wrapper  # type: ignore[return-value]


def _show_warning(
    message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any
) -> None:
    error_console.print(f"[yellow]warning:[/] {message}", highlight=False)


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


@app.command()
@user_errors
def train(
    name: str = typer.Argument(..., help="Model to train (see `gentool list`), or DIST:NAME."),
    data: str | None = typer.Option(
        None,
        "--data",
        "-d",
        help="Image folder, .npz file, or builtin:faces / builtin:shapes (default: a built-in set)",
        rich_help_panel=DATA_PANEL,
    ),
    limit: int | None = typer.Option(
        None,
        "--limit",
        help="Use at most N images (built-in sets: generate N) (default: all; 5000 built-in)",
        rich_help_panel=DATA_PANEL,
    ),
    epochs: int | None = typer.Option(
        None,
        "--epochs",
        "-e",
        min=1,
        help="Train until this many epochs are done (default: 5; "
        "on --resume, the run's own target)",
        rich_help_panel=TRAINING_PANEL,
    ),
    batch_size: int | None = typer.Option(
        None,
        "--batch-size",
        "-b",
        min=1,
        help="Images per batch (default: the model's)",
        rich_help_panel=TRAINING_PANEL,
    ),
    seed: int | None = typer.Option(
        None,
        "--seed",
        help="Seed for initialisation, shuffling and noise (default: 0)",
        rich_help_panel=TRAINING_PANEL,
    ),
    device: str = typer.Option(
        "auto", "--device", help="auto, cpu, cuda or cuda:N", rich_help_panel=TRAINING_PANEL
    ),
    kernels: str | None = typer.Option(
        None,
        "--kernels",
        help="Fused-kernel backend: auto, triton or torch (default: $GENTOOL_KERNELS, else auto)",
        rich_help_panel=TRAINING_PANEL,
    ),
    lr: float | None = typer.Option(
        None, "--lr", help="Learning rate (same as -o lr=...)", rich_help_panel=MODEL_PANEL
    ),
    overrides: list[str] = typer.Option(
        [],
        "--option",
        "-o",
        metavar="KEY=VALUE",
        help="Set a model config field; repeatable (see `gentool info NAME`)",
        rich_help_panel=MODEL_PANEL,
    ),
    config_file: Path | None = typer.Option(
        None,
        "--config",
        "-c",
        help="TOML file of model config fields",
        rich_help_panel=MODEL_PANEL,
    ),
    run_dir: Path | None = typer.Option(
        None,
        "--run-dir",
        help="Run folder (default: runs/NAME/DATE_TIME); with --resume, the run to "
        "continue (default: the newest)",
        rich_help_panel=RUN_PANEL,
    ),
    resume: bool = typer.Option(
        False,
        "--resume",
        help="Continue a run exactly where its last checkpoint stopped",
        rich_help_panel=RUN_PANEL,
    ),
    overwrite: bool = typer.Option(
        False,
        "--overwrite",
        help="Replace the run in --run-dir with a new one (folders that hold no run are refused)",
        rich_help_panel=RUN_PANEL,
    ),
    nproc: int | None = typer.Option(
        None,
        "--nproc",
        min=1,
        help="Train in N processes on this machine (runs torchrun for you; one per GPU)",
        rich_help_panel=SCALE_PANEL,
    ),
    amp: bool = typer.Option(
        False,
        "--amp",
        help="Mixed precision: bfloat16 autocast (float16 and a gradient scaler without it)",
        rich_help_panel=SCALE_PANEL,
    ),
    compile_networks: bool = typer.Option(
        False, "--compile", help="torch.compile the model's networks", rich_help_panel=SCALE_PANEL
    ),
    channels_last: bool = typer.Option(
        False,
        "--channels-last",
        help="Channels-last (NHWC) memory layout for weights and batches",
        rich_help_panel=SCALE_PANEL,
    ),
    sync_bn: bool = typer.Option(
        False,
        "--sync-bn",
        help="Several GPUs: BatchNorm statistics over the whole global batch",
        rich_help_panel=SCALE_PANEL,
    ),
    ema: float | None = typer.Option(
        None,
        "--ema",
        metavar="DECAY",
        help="Keep a moving average of the weights (e.g. 0.999) and sample from it",
        rich_help_panel=SCALE_PANEL,
    ),
    eval_every: int | None = typer.Option(
        None,
        "--eval-every",
        min=1,
        help="Measure the model every N epochs, logged with the losses (default: never)",
        rich_help_panel=EVAL_PANEL,
    ),
    eval_n: int | None = typer.Option(
        None,
        "--eval-n",
        min=10,
        help="Images per evaluation during training (default: 500): few, to stay cheap; use "
        "`gentool eval --n 5000` for numbers to quote",
        rich_help_panel=EVAL_PANEL,
    ),
    eval_metrics: str | None = typer.Option(
        None,
        "--eval-metrics",
        help="Comma-separated: fid, kid, pr, recon (default: all that the model can do)",
        rich_help_panel=EVAL_PANEL,
    ),
    eval_features: str | None = typer.Option(
        None,
        "--eval-features",
        help="Feature network for fid, kid and pr: builtin (the default) or inception",
        rich_help_panel=EVAL_PANEL,
    ),
) -> None:
    """Train a model and write checkpoints, metrics and sample grids to a run folder.

    [dim]Examples:
      gentool train dcgan --data ./faces --epochs 20
      gentool train dcgan --limit 2000 -o image_size=32 --epochs 3
      gentool train dcgan --resume --epochs 30
      gentool train dcgan --nproc 2 --batch-size 128 --ema 0.999
      gentool train vae --eval-every 2 --eval-metrics fid,recon[/]
    """
    from gentool.distributed import Ranks, ranks_from_environment, shard_size
    from gentool.evaluate import SAMPLING_METRICS, EvalSettings, parse_metrics
    from gentool.features import FEATURE_NAMES, load_extractor
    from gentool.kernels.dispatch import check_backend_name, use_backend
    from gentool.monitor import TRAINING_EVAL_IMAGES, EvalSchedule
    from gentool.train import Acceleration, TrainRequest, run_training

    entry = resolve(name)
    eval_schedule = None
    eval_options = {
        "--eval-n": eval_n,
        "--eval-metrics": eval_metrics,
        "--eval-features": eval_features,
    }
    if eval_every is None and (given := [flag for flag, value in eval_options.items() if value]):
        raise ConfigError(f"{', '.join(given)} set how --eval-every N evaluates: add it")
    if eval_every is not None:
        features = eval_features or "builtin"
        if features not in FEATURE_NAMES:
            raise ConfigError(
                f"unknown --eval-features {features!r}: use {' or '.join(FEATURE_NAMES)}"
            )
        settings = EvalSettings(
            metrics=parse_metrics(eval_metrics, entry.plugin, "--eval-metrics"),
            n=TRAINING_EVAL_IMAGES if eval_n is None else eval_n,
            features=features,
        )
        if SAMPLING_METRICS & set(settings.metrics):
            load_extractor(features)  # a missing package or weights fails now, not later
        eval_schedule = EvalSchedule(eval_every, settings)
    if kernels is not None:
        check_backend_name(kernels)
    if overwrite and resume:
        raise ConfigError(
            "--overwrite and --resume contradict each other: --resume continues the run in "
            "--run-dir, --overwrite replaces it; pass one"
        )
    if overwrite and run_dir is None:
        raise ConfigError("--overwrite needs --run-dir, the run to replace")
    if resume:
        changed = {
            "--option": overrides,
            "--config": config_file,
            "--lr": lr,
            "--batch-size": batch_size,
            "--seed": seed,
            "--limit": limit,
            "--ema": ema,
        }
        given = [flag for flag, value in changed.items() if value not in (None, [])]
        if given:
            raise ConfigError(
                f"{', '.join(given)} cannot change a run being resumed; start a new run instead"
            )
        config_values: dict[str, Any] = {}
    else:
        config_values = _config_values(entry, config_file, overrides, lr)
    if nproc is not None:  # the options are valid: now each process checks the rest
        if not resume:
            shard_size(batch_size or entry.plugin.default_batch_size, Ranks(world_size=nproc))
        raise typer.Exit(_run_torchrun(nproc))
    request = TrainRequest(
        entry=entry,
        config_values=config_values,
        data=data,
        limit=limit,
        epochs=epochs,
        batch_size=batch_size,
        seed=seed,
        device=device,
        run_dir=run_dir,
        resume=resume,
        acceleration=Acceleration(
            amp=amp, compile=compile_networks, channels_last=channels_last, sync_bn=sync_bn
        ),
        ema=ema,
        overwrite=overwrite,
        eval_schedule=eval_schedule,
    )
    with use_backend(kernels) if kernels is not None else contextlib.nullcontext():
        summary, run = run_training(request, console)
    if not ranks_from_environment().main:
        return
    grid = f"; last samples: {summary.last_sample_grid}" if summary.last_sample_grid else ""
    console.print(
        f"[green]done:[/] {summary.epochs_done} epochs of {entry.name} in {run} "
        f"({summary.steps} steps, {summary.seconds:.1f} s, {summary.images_per_second:.1f} "
        f"images/s){grid}",
        highlight=False,
    )


def _run_torchrun(nproc: int) -> int:
    """Run this same `gentool train` command under torchrun in `nproc` processes; its exit code.

    Ctrl-C reaches torchrun and its workers too (one terminal, one process group): the workers
    save and stop, and this waits for them.
    """
    if "RANK" in os.environ:
        raise GentoolError("--nproc cannot be used under torchrun: it starts torchrun itself")
    arguments = sys.argv[sys.argv.index("train") + 1 :]
    forwarded = []
    skip_value = False
    for argument in arguments:
        if skip_value:
            skip_value = False
        elif argument == "--nproc":
            skip_value = True
        elif not argument.startswith("--nproc="):
            forwarded.append(argument)
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        str(nproc),
        "-m",
        "gentool",
        "train",
        *forwarded,
    ]
    process = subprocess.Popen(command)
    try:
        return process.wait()
    except KeyboardInterrupt:  # torchrun reports its workers' stop as a failure: it was not one
        process.wait()
        return EXIT_INTERRUPTED


@app.command()
@user_errors
def sample(
    name: str = typer.Argument(..., help="Model whose run to sample from."),
    count: int = typer.Option(64, "--n", "-n", min=1, max=4096, help="Number of images."),
    label: str | None = typer.Option(
        None, "--label", help="Conditional models: the class to draw, by index or name."
    ),
    grid_by_class: bool | None = typer.Option(
        None,
        "--grid-by-class/--no-grid-by-class",
        help="Conditional models: one row per class (default for them).",
        show_default=False,
    ),
    run_dir: Path | None = typer.Option(
        None, "--run", help="Run folder (default: the newest run of NAME under ./runs)"
    ),
    out: Path | None = typer.Option(
        None, "--out", help="File to write (default: RUN/samples/sample_seedS_nN.png or .npz)"
    ),
    output_format: str = typer.Option(
        "png", "--format", help="png (a grid) or npz (the raw images, and labels, as arrays)"
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the noise: same seed, same images."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N"),
    raw_weights: bool = typer.Option(
        False, "--raw-weights", help="Runs trained with --ema: the trained, not averaged, weights"
    ),
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
    console.print(f"wrote {written.count} samples{layout} to {written.path}", highlight=False)


@app.command()
@user_errors
def interpolate(
    name: str = typer.Argument(..., help="Generative model whose run to walk through."),
    steps: int = typer.Option(8, "--steps", min=2, max=64, help="Images per row, ends included."),
    rows: int = typer.Option(8, "--rows", min=1, max=64, help="Random code pairs, one per row."),
    method: str = typer.Option("slerp", "--method", help="lerp (straight) or slerp (spherical)"),
    start_image: Path | None = typer.Option(
        None, "--from", help="Models that encode: walk from this image's code ..."
    ),
    end_image: Path | None = typer.Option(None, "--to", help="... to this image's code."),
    run_dir: Path | None = typer.Option(
        None, "--run", help="Run folder (default: the newest run of NAME under ./runs)"
    ),
    out: Path | None = typer.Option(
        None, "--out", help="PNG to write (default: RUN/samples/interpolate_METHOD_seedS.png)"
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the random codes."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N"),
    raw_weights: bool = typer.Option(
        False, "--raw-weights", help="Runs trained with --ema: the trained, not averaged, weights"
    ),
) -> None:
    """Walk through a model's latent space: rows of images between pairs of codes.

    [dim]Examples:
      gentool interpolate dcgan --steps 10 --method lerp
      gentool interpolate vae --from a.png --to b.png --steps 12[/]
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
        raw_weights=raw_weights,
    )
    console.print(
        f"wrote {written.count // written.columns} walks of {written.columns} steps to "
        f"{written.path}",
        highlight=False,
    )


@app.command()
@user_errors
def reconstruct(
    name: str = typer.Argument(..., help="Model whose run reconstructs (an autoencoder or vae)."),
    run_dir: Path | None = typer.Option(
        None, "--run", help="Run folder (default: the newest run of NAME under ./runs)"
    ),
    data: str | None = typer.Option(
        None, "--data", "-d", help="Images to reconstruct (default: the run's own data)"
    ),
    count: int = typer.Option(32, "--n", "-n", min=1, max=1024, help="Number of images."),
    out: Path | None = typer.Option(
        None, "--out", help="PNG to write (default: RUN/samples/reconstruct_nN.png)"
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N"),
) -> None:
    """Show images above their reconstructions, and print the mean reconstruction error.

    [dim]Example: gentool reconstruct ae --data ./faces --n 32[/]
    """
    from gentool.generate import reconstruct_images

    written, error = reconstruct_images(
        resolve(name), run_dir=run_dir, data=data, count=count, out=out, device=device
    )
    console.print(
        f"mean squared error {error:.5f} (pixels in [0, 1]) over {written.count} images; "
        f"originals above reconstructions in {written.path}",
        highlight=False,
    )


@app.command()
@user_errors
def encode(
    name: str = typer.Argument(..., help="Model whose run encodes (an autoencoder or vae)."),
    out: Path = typer.Option(..., "--out", help="safetensors file to write the codes to"),
    data: str | None = typer.Option(
        None, "--data", "-d", help="Images to encode (default: the run's own data)"
    ),
    run_dir: Path | None = typer.Option(
        None, "--run", help="Run folder (default: the newest run of NAME under ./runs)"
    ),
    batch_size: int = typer.Option(256, "--batch-size", "-b", min=1, help="Images per batch"),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N"),
) -> None:
    """Encode a dataset into codes (and its labels), as features for other tools.

    The file holds "codes" (N, ...) float32 and, for labelled data, "labels" (N,) int64; its
    metadata names the model, the run, the data and the class names.

    [dim]Example: gentool encode ae --data ./faces --out codes.safetensors[/]
    """
    from gentool.generate import encode_images

    path, count, shape = encode_images(
        resolve(name), run_dir=run_dir, data=data, out=out, batch_size=batch_size, device=device
    )
    shown = "×".join(map(str, shape))
    console.print(f"wrote {count} codes of shape ({shown}) to {path}", highlight=False)


@app.command("eval")
@user_errors
def evaluate(
    name: str = typer.Argument(..., help="Model whose run to evaluate."),
    run_dir: Path | None = typer.Option(
        None, "--run", help="Run folder (default: the newest run of NAME under ./runs)"
    ),
    data: str | None = typer.Option(
        None, "--data", "-d", help="Real images to compare with (default: the run's own data)"
    ),
    count: int = typer.Option(
        5000, "--n", "-n", min=10, help="Generated and real images compared (and reconstructed)"
    ),
    metrics: str | None = typer.Option(
        None,
        "--metrics",
        help="Comma-separated: fid, kid, pr (precision/recall), recon (MSE, PSNR, SSIM) "
        "(default: all that the model can do)",
    ),
    features: str = typer.Option(
        "builtin",
        "--features",
        help="builtin (a small network for the built-in data; offline) or inception "
        "(Inception-v3 via torch-fidelity)",
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the generated images."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N"),
    raw_weights: bool = typer.Option(
        False, "--raw-weights", help="Runs trained with --ema: the trained, not averaged, weights"
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
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
        entry,
        run_dir=run_dir,
        data=data,
        settings=settings,
        device=device,
        raw_weights=raw_weights,
    )
    if as_json:
        console.print_json(json.dumps({"run": str(result.run), **result.values}))
        return
    table = Table(
        "metric",
        "value",
        title=f"{entry.name} · {result.run} · epoch {result.epoch} · n {count} · {features}",
    )
    for key, value in result.values.items():
        if key not in ("event", "n", "features"):
            table.add_row(key, f"{value:.5g}" if isinstance(value, float) else str(value))
    console.print(table)
    cached = {True: " (real statistics from the cache)", False: "", None: ""}[result.cache_hit]
    console.print(f"appended to {result.run.metrics_file}{cached}", highlight=False)


@app.command()
@user_errors
def report(
    run_dir: Path = typer.Argument(..., help="Run folder to report on."),
    out: Path | None = typer.Option(None, "--out", help="HTML file (default: RUN/report.html)"),
    device: str = typer.Option(
        "auto", "--device", help="auto, cpu, cuda or cuda:N (for reconstructions)"
    ),
) -> None:
    """Write one self-contained HTML page about a run: config, data, timing, loss and metric
    curves, sample grids over the epochs and, for models that reconstruct, reconstructions.

    [dim]Example: gentool report runs/dcgan/2026-11-27_10-32-00 && xdg-open
    runs/dcgan/2026-11-27_10-32-00/report.html[/]
    """
    from gentool.checkpoint import RunFolder
    from gentool.report import write_report

    run = RunFolder(run_dir)
    record = run.read()
    entry = resolve(record.plugin.get("name", "?"))
    if entry.plugin.capabilities.reconstruct and not any(run.samples_dir.glob("reconstruct_*.png")):
        from gentool.generate import reconstruct_images

        reconstruct_images(entry, run_dir=run.path, data=None, count=16, out=None, device=device)
    path = write_report(run, record, out)
    console.print(f"wrote {path}", highlight=False)


@app.command("list")
@user_errors
def list_models(
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """List installed model plugins, including broken ones with their errors.

    [dim]Example: gentool list --json[/]
    """
    entries = discover()
    clashes = clashing_names(entries)
    rows = [_entry_summary(entry, clashes) for entry in entries]
    if as_json:
        console.print_json(json.dumps(rows))
        return
    table = Table("name", "summary", "from", "API", "capabilities")
    table.add_column("status", overflow="fold")
    for row in rows:
        status = "[green]ok[/]" if row["status"] == "ok" else f"[red]{row['status']}[/]"
        table.add_row(
            row["name"],
            row["summary"],
            f"{row['distribution']} {row['version']}",
            str(row["api_version"] or "?"),
            ", ".join(row["capabilities"]) or "train only",
            status,
        )
    console.print(table)


@app.command()
@user_errors
def info(
    name: str = typer.Argument(..., help="Model to describe."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
) -> None:
    """Describe a model: what it does, what it can do, and every config field.

    [dim]Example: gentool info dcgan[/]
    """
    entry = resolve(name)
    plugin = entry.plugin
    assert plugin is not None  # resolve() returns loaded plugins only
    fields = plugin.config_fields()
    if as_json:
        summary = _entry_summary(entry, set())
        summary["value_range"] = list(plugin.value_range)
        summary["default_batch_size"] = plugin.default_batch_size
        defaults = config_to_dict(plugin.parse_config())
        summary["config"] = [
            {
                "name": field.name,
                "type": field.type_name,
                "default": defaults[field.name],
                "accepted": field.accepted,
                "help": field.help,
            }
            for field in fields
        ]
        console.print_json(json.dumps(summary))
        return
    capabilities = ", ".join(_capability_names(entry)) or "train only"
    console.print(f"[bold]{plugin.name}[/] — {plugin.summary}", highlight=False)
    console.print(
        f"from {entry.distribution} {entry.version} · plugin API v{plugin.api_version} · "
        f"{capabilities} · pixels in [{plugin.value_range[0]:g}, {plugin.value_range[1]:g}] · "
        f"batch size {plugin.default_batch_size}",
        highlight=False,
    )
    table = Table("option", "default", "accepts", "description", title="config (-o KEY=VALUE)")
    for field in fields:
        table.add_row(field.name, _format_value(field.default), field.accepted, field.help)
    console.print(table)


@data_app.command("make")
@user_errors
def data_make(
    kind: str = typer.Argument(..., help="Built-in set: faces or shapes."),
    folder: Path = typer.Argument(..., help="Folder to write PNGs into (created; must be empty)."),
    count: int = typer.Option(5000, "--n", "-n", min=1, help="Number of images."),
    size: int = typer.Option(64, "--size", min=8, max=1024, help="Side of the square images."),
) -> None:
    """Write a built-in synthetic data set as PNG files (shapes in one sub-folder per class).

    [dim]Example: gentool data make faces ./faces --n 5000 && gentool train dcgan --data ./faces[/]
    """
    from gentool.data import write_builtin_set

    written = write_builtin_set(kind, folder, count=count, size=size)
    console.print(f"wrote {written} {kind} images ({size}×{size}) to {folder}", highlight=False)


@plugin_app.command("check")
@user_errors
def plugin_check(
    name: str = typer.Argument(..., help="Installed model to check, or DIST:NAME."),
) -> None:
    """Run the conformance kit on an installed model plugin: one row per rule of the plugin API.

    [dim]Example: gentool plugin check mymodel[/]
    """
    from gentool.testing import check_plugin

    entry = resolve(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the table shows each failure
        results = check_plugin(entry.plugin, on_fail="warn")
    table = Table("check", "rule", title=f"{entry.qualified_name} {entry.version}")
    table.add_column("result", overflow="fold")
    for result in results:
        verdict = "[green]passed[/]" if result.passed else f"[red]FAILED[/]: {result.message}"
        table.add_row(result.check, result.description, verdict)
    console.print(table)
    failed = [result.check for result in results if not result.passed]
    if failed:
        raise GentoolError(f"{len(failed)} of {len(results)} checks failed: {', '.join(failed)}")
    console.print(f"[green]all {len(results)} checks passed[/]")


@plugin_app.command("new")
@user_errors
def plugin_new(
    name: str = typer.Argument(..., help="The model's name, e.g. wgan-gp."),
    folder: Path | None = typer.Option(
        None, "--dir", help="Where to write the package (default: ./gentool-NAME)"
    ),
) -> None:
    """Write a ready plugin package: pyproject with the entry point, a small model, a kit test.

    [dim]Example: gentool plugin new wgan-gp && pip install -e ./gentool-wgan-gp[/]
    """
    from gentool.scaffold import write_plugin_package

    folder = folder or Path(f"gentool-{name}")
    for path in write_plugin_package(name, folder):
        console.print(f"  {path}", highlight=False)
    console.print(
        f"wrote the {name} plugin package; next: pip install -e {folder} && gentool plugin "
        f"check {name}",
        highlight=False,
    )


@bench_app.command("kernels")
@user_errors
def bench_kernels(
    op: str | None = typer.Option(
        None, "--op", help="One op (default: all): reparam_kl, convt_bn_relu"
    ),
    sizes: str = typer.Option("dcgan", "--sizes", help="small, dcgan (model sizes) or large"),
    backends: str = typer.Option(
        "eager,compile,torch,triton,triton-gemm",
        "--backends",
        help="Comma-separated backends to compare",
    ),
    dtype: str = typer.Option("float32", "--dtype", help="float32 or bfloat16"),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N"),
    json_path: Path | None = typer.Option(None, "--json", help="Also write the numbers here"),
    static: bool = typer.Option(
        False, "--static", help="Compile every Triton launch for real GPUs instead (no GPU needed)"
    ),
    target: str | None = typer.Option(
        None, "--target", help="With --static: sm_80 (A100) or sm_90 (H100); default both"
    ),
) -> None:
    """Check each fused op against a float64 reference, then time it on each backend.

    Backends: eager (the unfused PyTorch composition), compile (it under torch.compile), torch
    (the op's PyTorch implementation), triton (its kernels; CUDA only), triton-gemm
    (convt_bn_relu with Triton's convolution too). A wrong result is shown in red and makes the
    exit status 1. --static compiles every Triton launch of training and of these benchmarks
    for an A100 and an H100 and shows each kernel's registers, spills, shared memory and
    occupancy; a compile error or a broken budget makes the exit status 1.

    [dim]Examples: gentool bench kernels --sizes large --json bench.json
              gentool bench kernels --static --target sm_90[/]
    """
    if static:
        from gentool.kernel_report import static_command

        static_command(target, json_path, console, error_console)
        return
    import torch
    from rich.progress import Progress

    from gentool.atomic import write_text
    from gentool.bench import OPS, cases, device_copy_ceiling, results_to_json, run_op
    from gentool.train import resolve_device

    ops = [_choice("--op", op, OPS)] if op else list(OPS.values())
    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16}
    chosen_dtype = _choice("--dtype", dtype, dtypes)
    chosen_backends = [name.strip() for name in backends.split(",") if name.strip()]
    for operation in ops:
        _choice("--sizes", sizes, operation.sizes)
    target = resolve_device(device)
    ceiling = device_copy_ceiling(target)
    results = []
    with Progress(console=error_console, transient=True) as progress:
        task = progress.add_task(
            "benchmarking", total=sum(cases(o, sizes, chosen_backends) for o in ops)
        )
        for operation in ops:
            results += run_op(
                operation,
                sizes=sizes,
                backends=chosen_backends,
                dtype=chosen_dtype,
                device=target,
                ceiling_gbps=ceiling,
                on_result=lambda result: progress.advance(task),
            )
    device_name = torch.cuda.get_device_name(target) if target.type == "cuda" else "cpu"
    verdicts = {"ok": "[green]yes[/]", "failed": "[red]FAILED[/]", "skipped": "[dim]skipped[/]"}
    for operation in ops:
        table = Table(title=f"{operation.name} · {device_name} · {dtype} · copy {ceiling:.0f} GB/s")
        columns = ["shape", "backend", "correct", "ms", "GB/s", "%copy"]
        columns += ["TFLOP/s"] if operation.flops else []
        for column in [*columns, "×eager", "peak MB"]:
            table.add_column(column, no_wrap=True)
        table.add_column("note", overflow="fold")
        for result in (result for result in results if result.op == operation.name):
            error = "" if result.max_error is None else f" {result.max_error:.0e}"
            note = result.reason
            table.add_row(
                "×".join(map(str, result.shape)),
                result.backend,
                verdicts[result.status] + error,
                _number(result.median_ms, "{:.3f}"),
                _number(result.gbps, "{:.1f}"),
                _number(result.ceiling_percent, "{:.0f}"),
                *([_number(result.tflops, "{:.2f}")] if operation.flops else []),
                _number(result.speedup, "{:.2f}"),
                _number(result.peak_mb, "{:.0f}"),
                f"[red]{note}[/]" if result.status == "failed" else note,
            )
        console.print(table)
    if json_path is not None:
        report = results_to_json(results, device=device_name, ceiling_gbps=ceiling)
        write_text(json_path, json.dumps(report, indent=2) + "\n")
    failed = [result for result in results if result.status == "failed"]
    if failed:
        names = ", ".join(f"{result.op}/{result.backend}" for result in failed)
        raise GentoolError(f"{len(failed)} results disagree with the reference: {names}")


@bench_app.command("train")
@user_errors
def bench_train(
    name: str = typer.Argument(..., help="Model to time."),
    overrides: list[str] = typer.Option(
        [], "--option", "-o", metavar="KEY=VALUE", help="Set a model config field; repeatable"
    ),
    batch_size: int | None = typer.Option(
        None, "--batch-size", "-b", min=1, help="Images per step (default: the model's)"
    ),
    steps: int = typer.Option(5, "--steps", min=1, help="Timed steps per variant, after warm-up"),
    variants: str = typer.Option(
        "eager,compile,fused",
        "--variants",
        help="Comma-separated: eager, compile, fused, channels-last, compile+channels-last",
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N"),
) -> None:
    """Images per second of full training steps: eager, torch.compile, the fused kernels, and
    channels-last. Under torchrun, each process steps on its share of the batch.

    [dim]Examples:
      gentool bench train dcgan --steps 10
      torchrun --nproc-per-node 2 -m gentool bench train dcgan --variants eager[/]
    """
    import torch

    from gentool.bench import TRAIN_VARIANTS, bench_training
    from gentool.distributed import join_group, leave_group, ranks_from_environment
    from gentool.train import resolve_device

    entry = resolve(name)
    config = entry.plugin.parse_config(_config_values(entry, None, overrides, None))
    chosen = [variant.strip() for variant in variants.split(",") if variant.strip()]
    for variant in chosen:
        _choice("--variants", variant, dict.fromkeys(TRAIN_VARIANTS))
    target = resolve_device(device)
    batch = batch_size or entry.plugin.default_batch_size
    ranks = ranks_from_environment()
    if ranks.distributed:
        target = join_group(ranks, target)
    try:
        with error_console.status(f"timing {entry.name} training steps"):
            results = bench_training(
                entry.plugin,
                config,
                batch_size=batch,
                device=target,
                variants=chosen,
                steps=steps,
                ranks=ranks,
            )
    finally:
        leave_group()
    if not ranks.main:
        return
    device_name = torch.cuda.get_device_name(target) if target.type == "cuda" else "cpu"
    if ranks.distributed:
        device_name += f" × {ranks.world_size} processes"
    table = Table(
        "variant",
        "images/s",
        "step",
        "vs eager",
        "peak",
        "note",
        title=f"{entry.name} · batch {batch} · {device_name}",
    )
    for result in results:
        table.add_row(
            result.variant,
            _number(result.images_per_second, "{:.1f}"),
            _number(result.step_ms, "{:.1f} ms"),
            _number(result.speedup, "{:.2f}×"),
            _number(result.peak_mb, "{:.0f} MB"),
            f"[dim]skipped: {result.reason}[/]" if result.status == "skipped" else "",
        )
    console.print(table)


def _choice(option: str, value: str, choices: Any) -> Any:
    if value not in choices:
        raise GentoolError(f"{option} must be one of {', '.join(choices)}; got {value!r}")
    return choices[value]


def _number(value: float | None, template: str) -> str:
    return "–" if value is None else template.format(value)


def _config_values(
    entry: PluginEntry, config_file: Path | None, overrides: list[str], lr: float | None
) -> dict[str, Any]:
    """Config values from the TOML file, then -o assignments, then --lr, later ones winning."""
    values: dict[str, Any] = {}
    if config_file is not None:
        values.update(toml_load_file(config_file))
    for assignment in overrides:
        key, value = parse_assignment(assignment)
        values[key] = value
    if lr is not None:
        if "lr" not in {field.name for field in entry.plugin.config_fields()}:
            raise ConfigError(f"{entry.name} has no learning-rate option 'lr'; see gentool info")
        values["lr"] = lr
    entry.plugin.parse_config(values)  # fail now, before any data is read
    return values


def _capability_names(entry: PluginEntry) -> list[str]:
    if entry.plugin is None:
        return []
    capabilities = entry.plugin.capabilities
    names = ("sample", "reconstruct", "encode", "conditional")
    return [name for name in names if getattr(capabilities, name)]


def _entry_summary(entry: PluginEntry, clashes: set[str]) -> dict[str, Any]:
    if not entry.ok:
        status = f"error: {entry.error}"
    elif entry.name in clashes:
        status = f"name clash: use {entry.qualified_name}"
    else:
        status = "ok"
    return {
        "name": entry.name,
        "summary": entry.plugin.summary if entry.plugin else "",
        "distribution": entry.distribution,
        "version": entry.version,
        "api_version": entry.plugin.api_version if entry.plugin else None,
        "capabilities": _capability_names(entry),
        "status": status,
    }


def _format_value(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(str(item) for item in value)
    return str(value)


def main() -> None:
    app()
