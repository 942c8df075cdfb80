"""`gentool train`: the options, a TrainRequest from them, and --nproc's torchrun."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from gentool.cli.app import EXIT_INTERRUPTED, app, console, error_console, user_errors
from gentool.cli.options import DeviceOption, ModelOverridesOption
from gentool.errors import ConfigError, GentoolError
from gentool.launcher import PROCESS_ERRORS
from gentool.loggers import installed_loggers
from gentool.registry import resolve
from gentool.terminal import counted, escaped

DATA, TRAINING, MODEL, RUN, SCALE, EVAL = (
    "Data", "Training", "Model config", "Run folder", "Speed and scale", "Evaluation",
)  # fmt: skip

DataOption = Annotated[
    str | None,
    typer.Option(
        "--data",
        "-d",
        help="Image folder, .zip of images, .npz file, or builtin:faces / builtin:shapes "
        "(default: a built-in set)",
        rich_help_panel=DATA,
    ),
]
LimitOption = Annotated[
    int | None,
    typer.Option(
        "--limit",
        help="Use at most N images (built-in sets: generate N) (default: all; 5000 built-in)",
        rich_help_panel=DATA,
    ),
]
AugmentOption = Annotated[
    str | None,
    typer.Option(
        "--augment",
        metavar="NAMES",
        help="Augment the data: flip (mirror each image left to right at random, drawn from the "
        "seed, epoch and image) (default: none; on --resume, the run's own)",
        rich_help_panel=DATA,
    ),
]
VerifyDataOption = Annotated[
    bool,
    typer.Option(
        "--verify-data",
        help="Read every data file and cached pixel again and check them against the cache, "
        "which otherwise trusts files whose names, sizes and times are unchanged",
        rich_help_panel=DATA,
    ),
]
EpochsOption = Annotated[
    int | None,
    typer.Option(
        "--epochs",
        "-e",
        min=1,
        max=2**63 - 1,  # as --seed: run.json holds int64
        help="Train until this many epochs are done (default: 5; on --resume, the run's own "
        "target)",
        rich_help_panel=TRAINING,
    ),
]
BatchOption = Annotated[
    int | None,
    typer.Option(
        "--batch-size",
        "-b",
        min=1,
        help="Images per batch (default: the model's)",
        rich_help_panel=TRAINING,
    ),
]
TrainSeedOption = Annotated[
    int | None,
    typer.Option(
        "--seed",
        help="Seed for initialisation, shuffling and noise (default: 0)",
        rich_help_panel=TRAINING,
    ),
]
KernelsOption = Annotated[
    str | None,
    typer.Option(
        "--kernels",
        help="Fused-kernel backend: auto, triton or torch (default: $GENTOOL_KERNELS, else auto)",
        rich_help_panel=TRAINING,
    ),
]
LogEveryOption = Annotated[
    int,
    typer.Option(
        "--log-every",
        min=1,
        help="Copy the steps' logged values from the device every N steps (and at each epoch's "
        "end, and at least once a second in a single process)",
        rich_help_panel=TRAINING,
    ),
]
# Read from the loggers' entry points, which nothing imports until a training uses them.
INSTALLED_LOGGERS = ", ".join(sorted({entry.name for entry in installed_loggers()})) or "none"
LogOption = Annotated[
    str | None,
    typer.Option(
        "--log",
        metavar="NAMES",
        help="Also send the logged values, evaluations, sample grids and config to these "
        f"loggers, comma-separated; installed: {INSTALLED_LOGGERS} (default: none; on --resume, "
        "the run's own; --log none for none)",
        rich_help_panel=TRAINING,
    ),
]
# A string, checked as -o lr= is: a float would already have read 1e-400 as 0.
LrOption = Annotated[
    str | None,
    typer.Option(
        "--lr", metavar="FLOAT", help="Learning rate (same as -o lr=...)", rich_help_panel=MODEL
    ),
]
# A list, so that a second --config is refused rather than silently replacing the first.
ConfigOption = Annotated[
    list[str] | None,
    typer.Option(
        "--config",
        "-c",
        metavar="FILE",
        help="TOML file of model config fields; -o and --lr override its values",
        rich_help_panel=MODEL,
    ),
]
RunDirOption = Annotated[
    Path | None,
    typer.Option(
        "--run-dir",
        help="Run folder (default: runs/NAME/DATE_TIME); with --resume, the run to continue "
        "(default: the newest)",
        rich_help_panel=RUN,
    ),
]
ResumeOption = Annotated[
    bool,
    typer.Option(
        "--resume",
        help="Continue a run exactly where its last checkpoint stopped",
        rich_help_panel=RUN,
    ),
]
OverwriteOption = Annotated[
    bool,
    typer.Option(
        "--overwrite",
        help="Replace the run in --run-dir with a new one (folders that hold no run are refused)",
        rich_help_panel=RUN,
    ),
]
NprocOption = Annotated[
    int | None,
    typer.Option(
        "--nproc",
        min=1,
        help="Train in N processes on this machine (runs torchrun for you; one per GPU)",
        rich_help_panel=SCALE,
    ),
]
AmpOption = Annotated[
    bool,
    typer.Option(
        "--amp",
        help="Mixed precision: bfloat16 autocast (float16 and a gradient scaler without it)",
        rich_help_panel=SCALE,
    ),
]
CompileOption = Annotated[
    bool,
    typer.Option("--compile", help="torch.compile the model's networks", rich_help_panel=SCALE),
]
ChannelsLastOption = Annotated[
    bool,
    typer.Option(
        "--channels-last",
        help="Channels-last (NHWC) memory layout for weights and batches",
        rich_help_panel=SCALE,
    ),
]
SyncBnOption = Annotated[
    bool,
    typer.Option(
        "--sync-bn",
        help="Several GPUs: BatchNorm statistics over the whole global batch",
        rich_help_panel=SCALE,
    ),
]
EmaOption = Annotated[
    float | None,
    typer.Option(
        "--ema",
        metavar="DECAY",
        help="Keep a moving average of the weights (e.g. 0.999) and sample from it",
        rich_help_panel=SCALE,
    ),
]
EvalEveryOption = Annotated[
    int | None,
    typer.Option(
        "--eval-every",
        min=1,
        help="Measure the model every N epochs, logged with the losses (default: never)",
        rich_help_panel=EVAL,
    ),
]
EvalNOption = Annotated[
    int | None,
    typer.Option(
        "--eval-n",
        min=10,
        help="Images per evaluation during training (default: 500): few, to stay cheap; use "
        "`gentool eval --n 5000` for numbers to quote",
        rich_help_panel=EVAL,
    ),
]
EvalMetricsOption = Annotated[
    str | None,
    typer.Option(
        "--eval-metrics",
        help="Comma-separated: fid, kid, pr, recon, labels, as gentool eval's --metrics "
        "(default: all that the model can do)",
        rich_help_panel=EVAL,
    ),
]
EvalFeaturesOption = Annotated[
    str | None,
    typer.Option(
        "--eval-features",
        help="Feature network for fid, kid and pr: builtin (the default) or inception",
        rich_help_panel=EVAL,
    ),
]


@app.command()
@user_errors
def train(
    name: Annotated[str, typer.Argument(help="Model to train (see `gentool list`), or DIST:NAME.")],
    data: DataOption = None,
    limit: LimitOption = None,
    augment: AugmentOption = None,
    verify_data: VerifyDataOption = False,
    epochs: EpochsOption = None,
    batch_size: BatchOption = None,
    seed: TrainSeedOption = None,
    device: DeviceOption = "auto",
    kernels: KernelsOption = None,
    log_every: LogEveryOption = 50,
    log: LogOption = None,
    lr: LrOption = None,
    overrides: ModelOverridesOption = [],  # noqa: B006 - Typer's declaration, never mutated
    config_files: ConfigOption = None,
    run_dir: RunDirOption = None,
    resume: ResumeOption = False,
    overwrite: OverwriteOption = False,
    nproc: NprocOption = None,
    amp: AmpOption = False,
    compile_networks: CompileOption = False,
    channels_last: ChannelsLastOption = False,
    sync_bn: SyncBnOption = False,
    ema: EmaOption = None,
    eval_every: EvalEveryOption = None,
    eval_n: EvalNOption = None,
    eval_metrics: EvalMetricsOption = None,
    eval_features: EvalFeaturesOption = None,
) -> None:
    """Train a model and write checkpoints, metrics and sample grids to a run folder.

    [dim]Examples:
      gentool train dcgan --data ./faces --epochs 20
      gentool train dcgan --data faces.zip --augment flip
      gentool train dcgan --limit 2000 -o image_size=32 --epochs 3
      gentool train dcgan --resume --epochs 30
      gentool train dcgan --nproc 2 --batch-size 128 --ema 0.999
      gentool train vae --eval-every 2 --eval-metrics fid,recon
      gentool train dcgan --log tensorboard,csv[/]
    """
    from gentool.config import parse_assignment
    from gentool.training import Acceleration, TrainRequest, run_training
    from gentool.training.distributed import ranks_from_environment
    from gentool.training.request import plan_training

    entry = resolve(name)
    request = TrainRequest(
        entry=entry, config_values=dict(map(parse_assignment, overrides)),
        config_file=_config_file(config_files), lr=lr, data=data, limit=limit, epochs=epochs,
        batch_size=batch_size, seed=seed, device=device, run_dir=run_dir, resume=resume,
        overwrite=overwrite, ema=ema, eval_every=eval_every, eval_n=eval_n,
        eval_metrics=eval_metrics, eval_features=eval_features, log_every=log_every, log=log,
        augment=augment, verify_data=verify_data,
        acceleration=Acceleration(amp, compile_networks, channels_last, sync_bn, kernels),
    )  # fmt: skip
    if nproc is not None:  # each process checks the rest, and rank 0 says what it found
        plan_training(request, world_size=nproc)
        raise typer.Exit(_run_torchrun(nproc))
    summary, run = run_training(request, console)
    if ranks_from_environment().main:
        last = summary.last_sample_grid
        grid = f"; last samples: {escaped(last)}" if last else ""
        steps = counted(summary.total_steps, "step")
        if summary.steps != summary.total_steps:  # a resumed run: say what this command did
            steps += f", {summary.steps} of them now"
        console.print(
            f"[green]done:[/] {counted(summary.epochs_done, 'epoch')} of {escaped(entry.name)} in "
            f"{escaped(run)} ({steps}, {summary.seconds:.1f} s, "
            f"{summary.images_per_second:.1f} images/s){grid}",
            highlight=False,
        )


def _config_file(given: list[str] | None) -> Path | None:
    """The one --config file, refusing a second (which one would win is a guess) and an empty
    name (which reads as the current folder)."""
    if not given:
        return None
    if len(given) > 1:
        raise ConfigError(
            f"--config was given {len(given)} times: give one file, and override its values "
            "with -o KEY=VALUE"
        )
    if not given[0].strip():
        raise ConfigError("--config needs a file name, and was given an empty one")
    return Path(given[0])


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
    command = [sys.executable, "-m", "gentool.launcher", "--standalone"]
    # "--": torchrun's parser reads no further. It takes an option of gentool's that begins one
    # of its own for an abbreviation, and refuses --log as ambiguous (--log-dir, --logs-specs).
    command += ["--nproc-per-node", str(nproc), "-m", "--", "gentool", "train", *forwarded]
    with tempfile.TemporaryDirectory(prefix="gentool-errors-") as errors:
        process = subprocess.Popen(command, env={**os.environ, PROCESS_ERRORS: errors})
        try:
            code = process.wait()
        except KeyboardInterrupt:  # torchrun reports its workers' stop as a failure: it was not one
            process.wait()
            return EXIT_INTERRUPTED
        _report_process_errors(Path(errors))
    return code


def _report_process_errors(folder: Path) -> None:
    """One line for a failure of the training processes: rank 0's, which holds the run and so
    knows what its folder keeps; else the first other process's that said why it stopped."""
    said = {
        int(path.name.removeprefix("rank-")): path.read_text() for path in folder.glob("rank-*")
    }
    if not said:
        return
    rank = min(said)
    where = "" if rank == 0 else f"process {rank}: "
    error_console.print(f"[red]error:[/] {escaped(where + said[rank])}", highlight=False)
