"""Faults during training, through the command line: a plugin that raises or diverges, a full
disk, runs in the way of a new one. Each leaves the run folder as its last checkpoint left it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from gentool import checkpoint
from gentool.checkpoint import RunFolder
from gentool.cli import app
from gentool.models import load_trained
from gentool.registry import resolve
from tests.conftest import (
    TINY_DCGAN_ARGS,
    disk_full_on_call,
    install_fake_distribution,
    one_line_error,
)

pytestmark = pytest.mark.usefixtures("tiny_cpu_training")
runner = CliRunner()
TINY = [*TINY_DCGAN_ARGS, "--limit", "48", "-b", "16", "--device", "cpu"]  # 3 steps per epoch

FAULTY_PLUGIN = """
from dataclasses import replace
from pathlib import Path

from gentool.plugins.dcgan import plugin as dcgan


def build(config, spec):
    import torch
    from gentool.plugins.dcgan.model import DCGAN

    class FaultyDCGAN(DCGAN):
        # The fault is switched on by a file in the working folder, so that a resume can do
        # without it.
        def training_step(self, batch, ctx):
            logs = super().training_step(batch, ctx)
            if ctx.global_step == 4 and Path("raise").exists():
                raise ValueError("the discriminator fell over")
            if ctx.global_step == 4 and Path("nan").exists():
                logs["loss_d"] = torch.tensor(float("nan"))
            if ctx.global_step == 4 and Path("step").exists():
                logs["step"] = torch.tensor(4.0)  # a name each metrics.jsonl line uses itself
            return logs

    return FaultyDCGAN(config, spec)


plugin = replace(dcgan, name="faulty-gan", build=build)
"""


def invoke(*args: str):
    return runner.invoke(app, list(args))


@pytest.fixture
def faulty_plugin(tmp_path, monkeypatch):
    install_fake_distribution(
        tmp_path / "site",
        monkeypatch,
        module=f"faulty_{tmp_path.name}",
        source=FAULTY_PLUGIN,
        entry_points={"faulty-gan": f"faulty_{tmp_path.name}:plugin"},
    )


def committed_files(run_dir: Path) -> dict[str, bytes]:
    """run.json and the files of the checkpoint it names: what a kill or a fault must not touch."""
    record = RunFolder(run_dir).read()
    files = {"run.json": (run_dir / "run.json").read_bytes()}
    for path in sorted((run_dir / record.checkpoint).iterdir()):
        files[f"{record.checkpoint}/{path.name}"] = path.read_bytes()
    return files


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        (
            "raise",
            "error: plugin 'faulty-gan' (from fake-models 1.2) raised ValueError: the "
            "discriminator fell over in training_step; the last checkpoint in run is kept; "
            "GENTOOL_DEBUG=1 shows the traceback",
        ),
        (
            "nan",
            "error: non-finite values at epoch 2, step 2 (loss_d=nan) from plugin 'faulty-gan' "
            "(from fake-models 1.2); training stopped and the last checkpoint in run is kept; "
            "train a new run with a lower learning rate",
        ),
        (
            "step",
            "error: faulty-gan: training_step returned step, which each line of metrics.jsonl "
            "uses for itself: rename the value",
        ),
    ],
)
def test_a_failing_plugin_is_named_and_its_run_resumes_once_fixed(
    faulty_plugin, in_tmp, fault, message
):
    (in_tmp / fault).touch()
    failed = invoke("train", "faulty-gan", *TINY, "--epochs", "2", "--run-dir", "run")
    assert one_line_error(failed) == message
    record = RunFolder("run").read()
    assert (record.checkpoint, record.progress.global_step) == ("checkpoint-00000003", 3)
    before = committed_files(in_tmp / "run")

    (in_tmp / fault).unlink()
    resumed = invoke("train", "faulty-gan", "--resume", "--run-dir", "run")
    assert resumed.exit_code == 0, resumed.output
    assert RunFolder("run").read().progress.global_step == 6
    assert before["checkpoint-00000003/model.safetensors"] != b""  # it was there to lose
    steps = [
        json.loads(line)["step"] for line in Path("run/metrics.jsonl").read_text().splitlines()
    ]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_strict_plugins_let_the_plugins_own_exception_through(faulty_plugin, in_tmp, monkeypatch):
    monkeypatch.setenv("GENTOOL_STRICT_PLUGINS", "1")
    (in_tmp / "raise").touch()
    result = invoke("train", "faulty-gan", *TINY, "--epochs", "2", "--run-dir", "run")
    assert isinstance(result.exception, ValueError)
    assert str(result.exception) == "the discriminator fell over"


def test_a_full_disk_while_saving_keeps_the_last_checkpoint_and_says_how_to_go_on(
    in_tmp, monkeypatch
):
    assert invoke("train", "dcgan", *TINY, "--epochs", "1", "--run-dir", "run").exit_code == 0
    before = committed_files(in_tmp / "run")
    # The resumed run saves the model of epoch 2 first: the disk fills up right there.
    monkeypatch.setattr(
        "gentool.checkpoint.write_tensor_file", disk_full_on_call(1, checkpoint.write_tensor_file)
    )
    # The command it advises asks for the steps as this one computed them.
    resume = ("--resume", "--run-dir", "run", "--epochs", "2", "--amp", "--channels-last")
    result = invoke("train", "dcgan", *resume)
    assert one_line_error(result) == (
        "error: could not save a checkpoint in run: the disk is full (No space left on device); "
        "nothing was lost: the previous checkpoint checkpoint-00000003 is intact and run.json "
        "still names it; once fixed, resume with: gentool train dcgan --resume --run-dir run "
        "--epochs 2 --amp --channels-last"
    )
    assert committed_files(in_tmp / "run") == before
    assert sorted(
        path.name for path in (in_tmp / "run").iterdir() if "checkpoint" in path.name
    ) == ["checkpoint-00000003"]
    resumed = invoke("train", "dcgan", "--resume", "--run-dir", "run", "--epochs", "2")
    assert resumed.exit_code == 0, resumed.output


def test_overwrite_replaces_a_run_only_when_the_new_one_can_start(in_tmp):
    first = invoke("train", "dcgan", *TINY, "--epochs", "2", "--run-dir", "run", "--overwrite")
    assert first.exit_code == 0, first.output  # nothing to replace yet: a new run
    before = committed_files(in_tmp / "run")

    refused = invoke("train", "dcgan", *TINY, "--epochs", "1", "--run-dir", "run")
    assert "already holds a run: continue it with --resume, replace it with --overwrite" in (
        one_line_error(refused)
    )
    bad_data = invoke(
        "train", "dcgan", *TINY, "--run-dir", "run", "--overwrite", "--data", "missing"
    )
    assert "data path 'missing' does not exist" in one_line_error(bad_data)
    assert committed_files(in_tmp / "run") == before

    replaced = invoke(
        "train", "dcgan", *TINY, "--epochs", "1", "--seed", "5", "--run-dir", "run", "--overwrite"
    )
    assert replaced.exit_code == 0, replaced.output
    record = RunFolder("run").read()
    assert (record.training.seed, record.progress.epoch) == (5, 1)
    assert sorted(path.name for path in Path("run/samples").iterdir()) == ["epoch_0001.png"]


def test_overwrite_never_touches_a_folder_that_holds_no_run(in_tmp):
    (in_tmp / "photos").mkdir()
    (in_tmp / "photos" / "holiday.jpg").write_bytes(b"precious")
    result = invoke("train", "dcgan", *TINY, "--run-dir", "photos", "--overwrite")
    assert "is not empty and holds no run: choose a new or empty folder (--overwrite " in (
        one_line_error(result)
    )
    assert (in_tmp / "photos" / "holiday.jpg").read_bytes() == b"precious"


def test_the_temporary_files_of_a_run_killed_before_its_first_checkpoint_are_cleared(in_tmp):
    run = in_tmp / "run"
    (run / ".checkpoint-00000000.tmp").mkdir(parents=True)
    (run / ".checkpoint-00000000.tmp" / "model.safetensors").write_bytes(b"half")
    (run / ".run.json.x1y2.tmp").write_text("{")
    result = invoke("train", "dcgan", *TINY, "--epochs", "1", "--run-dir", "run")
    assert result.exit_code == 0, result.output
    assert sorted(path.name for path in run.iterdir()) == [
        "checkpoint-00000003",
        "epochs.jsonl",
        "loss.png",
        "metrics.jsonl",
        "run.json",
        "samples",
    ]
    load_trained(resolve("dcgan"), run, torch.device("cpu"))
