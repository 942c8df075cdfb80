"""Train models for fixed CPU budgets and measure them: the quality table of docs/evaluation.md.

    python scripts/quality_table.py calibrate dcgan:shapes cdcgan:shapes …   # seconds an epoch
    python scripts/quality_table.py run cdcgan:shapes --budgets 2,5,15       # train and evaluate
    python scripts/quality_table.py run cdcgan:shapes --budgets 15 --ema 0.999 --flags=--amp
    python scripts/quality_table.py table                                     # the markdown rows

A budget is minutes of training on this machine, turned into whole epochs by the model's measured
seconds an epoch (`calibrate` times two epochs and keeps the second: the first pays for start-up).
The run then trains for that many epochs, so a row reproduces with the same command on any
machine, however loaded; only the minutes it stands for belong to the machine that calibrated.
Each budget resumes the run of the one before, exactly as an uninterrupted run would train, and
a budget whose epochs the run already has is skipped, so longer budgets extend earlier runs.
`--flags` are the `gentool train` flags a run does not record (--amp, --channels-last), so
every training command of the run is given them; a calibration with flags is timed with them and
kept under its own name. `--ema D` goes to the first command, and the run keeps it.

Every command the script runs is `gentool` itself, printed and recorded with its results in
`quality/results.jsonl`, so each row of the table carries the commands that made it.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

OUT = Path("quality")
RESULTS = OUT / "results.jsonl"
CALIBRATION = OUT / "calibration.json"
IMAGE_SIZE = 32
EVAL_IMAGES = 1000
CONDITIONAL = {"cgan", "cdcgan"}


def gentool(*arguments: str) -> str:
    """Run `gentool ARGUMENTS`, echoing the command; its standard output."""
    command = ["gentool", *arguments]
    print("$", shlex.join(command), flush=True)
    done = subprocess.run([sys.executable, "-m", *command], capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{shlex.join(command)} failed:\n{done.stdout}{done.stderr}")
    return done.stdout


def train_arguments(model: str, data: str, limit: int, seed: int, options: list[str]) -> list[str]:
    arguments = [model, "--data", f"builtin:{data}", "--limit", str(limit), "--seed", str(seed)]
    arguments += ["-o", f"image_size={IMAGE_SIZE}"]
    for option in options:
        arguments += ["-o", option]
    return arguments


def run_name(
    model: str, data: str, limit: int, seed: int, options: list[str], flags: list[str]
) -> str:
    suffix = "".join(f"-{option.replace('=', '_').replace(',', '+')}" for option in options)
    suffix += "".join(f"-{flag.lstrip('-')}" for flag in flags)
    return f"{model}-{data}-{limit}-seed{seed}{suffix}"


def epoch_seconds(run: Path) -> list[float]:
    lines = (run / "epochs.jsonl").read_text().splitlines()
    return [line["seconds"] for line in map(json.loads, lines) if line.get("event") == "epoch"]


def calibrate(args: argparse.Namespace) -> None:
    calibration = json.loads(CALIBRATION.read_text()) if CALIBRATION.exists() else {}
    for target in args.targets:
        model, data = target.split(":")
        key = run_name(model, data, args.limit, 0, args.option, args.flags)
        run = OUT / "calibration" / key
        train = train_arguments(model, data, args.limit, 0, args.option)
        gentool("train", *train, *args.flags, "--epochs", "2", "--run-dir", str(run), "--overwrite")
        calibration[key] = epoch_seconds(run)[-1]
        print(f"{key}: {calibration[key]:.2f} s an epoch", flush=True)
        CALIBRATION.write_text(json.dumps(calibration, indent=2) + "\n")


def evaluate(model: str, run: Path, seed: int) -> tuple[list[str], dict]:
    metrics = "fid,pr,labels" if model in CONDITIONAL else "fid,pr"
    arguments = [model, "--run", str(run), "--n", str(EVAL_IMAGES), "--metrics", metrics]
    arguments += ["--seed", str(seed), "--json"]
    return arguments, json.loads(gentool("eval", *arguments))


def run(args: argparse.Namespace) -> None:
    calibration = json.loads(CALIBRATION.read_text())
    model, data = args.target.split(":")
    key = run_name(model, data, args.limit, 0, args.option, args.flags)
    per_epoch = calibration[key]
    named = args.flags + (["--ema", str(args.ema)] if args.ema else [])
    run_dir = OUT / "runs" / run_name(model, data, args.limit, args.seed, args.option, named)
    train = train_arguments(model, data, args.limit, args.seed, args.option)
    done = len(epoch_seconds(run_dir)) if run_dir.exists() else 0  # budgets run before
    for budget in sorted(args.budgets):
        epochs = max(1, round(budget * 60 / per_epoch))
        if epochs <= done:
            continue
        resume = ["--resume"] if done else []
        first = [*train, *(["--ema", str(args.ema)] if args.ema else [])]
        command = ["train", *(first if not done else [model]), *args.flags]
        command += ["--epochs", str(epochs), "--run-dir", str(run_dir), *resume]
        gentool(*command)
        evaluation_command, values = evaluate(model, run_dir, args.seed)
        record = {
            "model": model, "data": data, "limit": args.limit, "seed": args.seed,
            "options": args.option, "flags": named, "budget_minutes": budget, "epochs": epochs,
            "seconds_per_epoch": per_epoch, "train": ["gentool", *command],
            "eval": ["gentool", "eval", *evaluation_command], "values": values,
        }  # fmt: skip
        with RESULTS.open("a") as results:
            results.write(json.dumps(record) + "\n")
        reported = ("fid", "precision", "recall", "label_accuracy")
        shown = {name: values.get(name) for name in reported}
        print(f"{budget} min = {epochs} epochs: {shown}", flush=True)
        done = epochs


def table(args: argparse.Namespace) -> None:
    """The results as markdown rows, then the commands that made them, run by run."""
    records = [json.loads(line) for line in RESULTS.read_text().splitlines()]
    print("| model | data | images | options | budget | epochs | FID | precision | recall "
          "| label accuracy (lowest class) | seed |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for record in records:
        values = record["values"]
        accuracy = values.get("label_accuracy")
        labels = "–"
        if accuracy is not None:
            labels = f"{accuracy:.3f} ({min(values['label_accuracy_by_class'].values()):.3f})"
        flags = [shlex.join(record["flags"])] if record.get("flags") else []
        options = ", ".join(record["options"] + flags) or "defaults"
        print(
            f"| {record['model']} | {record['data']} | {record['limit']:,} | {options} "
            f"| {record['budget_minutes']:g} min | {record['epochs']} | {values['fid']:.1f} "
            f"| {values['precision']:.2f} | {values['recall']:.2f} | {labels} | {record['seed']} |"
        )
    print("\n```sh")

    def run_and_epochs(record: dict) -> tuple[str, int]:
        train = record["train"]
        return train[train.index("--run-dir") + 1], record["epochs"]

    for record in sorted(records, key=run_and_epochs):
        print(shlex.join(record["train"]))
        print(shlex.join(record["eval"]))
    print("```")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("calibrate", "run"):
        command = commands.add_parser(name)
        if name == "calibrate":
            command.add_argument("targets", nargs="+", help="MODEL:SET, e.g. dcgan:shapes")
        else:
            command.add_argument("target", help="MODEL:SET, e.g. dcgan:shapes")
            command.add_argument("--budgets", type=lambda text: [float(x) for x in text.split(",")])
            command.add_argument("--seed", type=int, default=0)
            command.add_argument("--ema", type=float, help="train --ema D: evaluate the average")
        command.add_argument("--limit", type=int, default=5000, help="images of the set")
        command.add_argument("-o", "--option", action="append", default=[], help="KEY=VALUE")
        command.add_argument(
            "--flags", type=shlex.split, default=[], help="gentool train flags, as one string"
        )
    commands.add_parser("table")
    args = parser.parse_args()
    OUT.mkdir(exist_ok=True)
    {"calibrate": calibrate, "run": run, "table": table}[args.command](args)


if __name__ == "__main__":
    main()
