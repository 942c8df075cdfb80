"""Run folders as untrusted input, and runs that must not be lost: --overwrite that fails,
two trainings of one folder, weights that turn non-finite, hand-edited run.json and
metrics.jsonl, a real full disk and a real read-only folder."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from gentool.checkpoint import RunFolder
from gentool.cli import app
from gentool.models import load_trained
from gentool.registry import resolve
from gentool.training.claim import RunClaim
from tests.conftest import TINY_DCGAN_ARGS, one_line_error

pytestmark = pytest.mark.usefixtures("tiny_cpu_training")
runner = CliRunner()
TINY = [*TINY_DCGAN_ARGS, "--limit", "48", "-b", "16", "--device", "cpu"]  # 3 steps per epoch


def invoke(*args: str):
    return runner.invoke(app, list(args))


def every_file(folder: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


@pytest.fixture
def trained(in_tmp) -> Path:
    assert invoke("train", "dcgan", *TINY, "--epochs", "1", "--run-dir", "run").exit_code == 0
    return in_tmp / "run"


@pytest.fixture
def one_class(in_tmp) -> Path:
    assert invoke("data", "make", "shapes", "shapes", "--n", "60", "--size", "16").exit_code == 0
    for other in ("square", "triangle", "cross", "ring", "star"):
        for path in (in_tmp / "shapes" / other).iterdir():
            path.unlink()
        (in_tmp / "shapes" / other).rmdir()
    return in_tmp / "shapes"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["-b", "1000"], "fewer than one batch of 1000"),
        (["-o", "latent_dim=10000000000"], "would take"),
        (["-o", "latent_dim=9223372036854775807"], "asks for tensors too large to count"),
        (["-o", "latent_dim=9223372036854775808"], "must be int >= 1, within int64's range"),
        (["-o", "lr=1e39"], "'lr' of dcgan must be float >= 0, finite and within float32's"),
        (["--data", "missing"], "data path 'missing' does not exist"),
        (["--data", "builtin:cats"], "unknown built-in data set 'cats'"),
    ],
)
def test_a_failed_overwrite_leaves_the_old_run_as_it_was(trained, arguments, message):
    before = every_file(trained)
    result = invoke("train", "dcgan", *TINY, *arguments, "--run-dir", "run", "--overwrite")
    assert message in one_line_error(result)
    assert every_file(trained) == before
    assert sorted(path.name for path in trained.parent.iterdir() if "run" in path.name) == ["run"]


def test_an_overwrite_by_a_model_that_cannot_build_keeps_the_old_run(trained, one_class):
    before = every_file(trained)
    result = invoke(
        "train", "cgan", "-o", "image_size=16", "--data", "shapes", "--device", "cpu",
        "--run-dir", "run", "--overwrite",
    )  # fmt: skip
    assert "cgan needs labelled data with at least 2 classes" in one_line_error(result)
    assert "cgan: cgan" not in result.output
    assert every_file(trained) == before


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--lr", "1e30"], "non-finite values at epoch 1, step 1"),
        (["--limit", "960"], "stopped: SIGTERM"),
    ],
)
def test_an_overwrite_that_fails_before_it_has_trained_keeps_the_old_run(
    trained, monkeypatch, arguments, message
):
    if message.startswith("stopped"):  # a stop asked at the very first step
        import signal

        from gentool.training import logbook

        add = logbook.StepLog.add

        def add_then_stop(self, step, **kwargs):
            if step.global_step == 1:
                signal.raise_signal(signal.SIGTERM)
                kwargs["stop_asked"] = True
            return add(self, step, **kwargs)

        monkeypatch.setattr(logbook.StepLog, "add", add_then_stop)
    before = every_file(trained)
    result = invoke("train", "dcgan", *TINY, *arguments, "--run-dir", "run", "--overwrite")
    assert message in result.output, result.output
    if message.startswith("non-finite"):
        assert "the run in run is untouched, as its replacement had not trained yet" in (
            one_line_error(result)
        )
        assert every_file(trained) == before
    else:  # a stop after a step of training commits that step, which then replaces the run
        assert RunFolder(trained).read().progress.global_step == 1
    assert sorted(path.name for path in trained.parent.iterdir() if "run" in path.name) == ["run"]


def test_an_overwrite_swaps_in_the_new_run_only_once_it_is_committed(trained):
    result = invoke("train", "dcgan", *TINY, "--epochs", "2", "--run-dir", "run", "--overwrite")
    assert result.exit_code == 0, result.output
    record = RunFolder(trained).read()
    assert record.progress.epoch == 2 and record.training.epochs == 2
    assert sorted(path.name for path in trained.parent.iterdir() if "run" in path.name) == ["run"]


def test_a_half_made_replacement_left_by_a_kill_is_cleared(trained):
    stale = trained.parent / ".gentool-replacing-99999.tmp"
    (stale / "checkpoint-00000000").mkdir(parents=True)
    before = every_file(trained)
    result = invoke("train", "dcgan", *TINY, "--run-dir", "run", "--overwrite", "--limit", "8")
    assert "fewer than one batch" in one_line_error(result)
    assert not stale.exists() and every_file(trained) == before


def test_a_run_being_trained_is_neither_resumed_nor_overwritten_by_another(trained):
    before = every_file(trained)
    with RunClaim(RunFolder(trained), "resume"):  # as the other training holds it
        resumed = invoke("train", "dcgan", "--resume", "--run-dir", "run", "--epochs", "2")
        assert "run is being trained by another process" in one_line_error(resumed)
        replaced = invoke("train", "dcgan", *TINY, "--run-dir", "run", "--overwrite")
        assert "run is being trained by another process" in one_line_error(replaced)
    assert every_file(trained) == before


def test_an_empty_run_dir_claimed_by_another_training_is_refused(in_tmp):
    (in_tmp / "run").mkdir()
    with RunClaim(RunFolder(in_tmp / "run"), "new") as claim:
        claim.commit_first(lambda run: None)  # the other training holds the folder
        result = invoke("train", "dcgan", *TINY, "--run-dir", "run")
        assert "run is being trained by another process" in one_line_error(result)


def test_two_trainings_started_at_once_get_a_folder_each(in_tmp):
    command = [sys.executable, "-m", "gentool", "train", "dcgan", *TINY, "--epochs", "1"]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    processes = [subprocess.Popen(command, env=environment, cwd=in_tmp) for _ in range(3)]
    assert [process.wait(timeout=600) for process in processes] == [0, 0, 0]
    runs = sorted((in_tmp / "runs" / "dcgan").iterdir())
    assert len(runs) == 3
    for run in runs:  # each its own: three steps of one run in each metrics file
        lines = (run / "metrics.jsonl").read_text().splitlines()
        assert [json.loads(line)["step"] for line in lines] == [1, 2, 3]


def test_two_trainings_of_one_run_dir_leave_one_run_and_one_error(in_tmp):
    command = [sys.executable, "-m", "gentool", "train", "dcgan", *TINY, "--run-dir", "run"]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    processes = [
        subprocess.Popen(command, env=environment, cwd=in_tmp, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outcomes = sorted((process.wait(timeout=600), process.stderr.read()) for process in processes)
    assert [code for code, _ in outcomes] == [0, 1]
    assert "Traceback" not in outcomes[1][1]
    assert (
        "being trained by another process" in outcomes[1][1]
        or "already holds a run" in (outcomes[1][1])
    )
    lines = (in_tmp / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == list(range(1, 16))


NAN_GRADIENT_PLUGIN = """
from dataclasses import replace

from gentool.plugins.dcgan import plugin as dcgan


def build(config, spec):
    import torch
    from gentool.plugins.dcgan.model import DCGAN

    class PoisonedDCGAN(DCGAN):
        # A finite loss, a NaN gradient: the last step of the second epoch ruins the weights.
        def training_step(self, batch, ctx):
            if ctx.global_step != 5:
                return super().training_step(batch, ctx)
            ctx.optimizers["g"].zero_grad()
            for parameter in self.generator.parameters():
                parameter.grad = torch.full_like(parameter, float("nan"))
            ctx.step("g")
            return {"loss_g": torch.tensor(0.5)}

    return PoisonedDCGAN(config, spec)


plugin = replace(dcgan, name="poisoned-gan", build=build)
"""


def test_weights_made_non_finite_are_never_committed(in_tmp, monkeypatch):
    from tests.conftest import install_fake_distribution

    install_fake_distribution(
        in_tmp / "site", monkeypatch, module="poisoned_gan", source=NAN_GRADIENT_PLUGIN,
        entry_points={"poisoned-gan": "poisoned_gan:plugin"},
    )  # fmt: skip
    result = invoke("train", "poisoned-gan", *TINY, "--epochs", "3", "--run-dir", "run")
    line = one_line_error(result)
    assert "non-finite weights after step 6" in line and "no checkpoint was written" in line
    assert RunFolder("run").read().checkpoint == "checkpoint-00000003"
    resumed = invoke("train", "dcgan", "--resume", "--run-dir", "run", "--epochs", "2")
    assert "is a run of 'poisoned-gan', not 'dcgan'" in one_line_error(resumed)
    again = invoke("train", "poisoned-gan", "--resume", "--run-dir", "run", "--epochs", "1")
    assert "already trained 1 epoch" in one_line_error(again)  # epoch 1's checkpoint loads


def edit(run: Path, change) -> None:
    record = json.loads((run / "run.json").read_text())
    change(record)
    (run / "run.json").write_text(json.dumps(record))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r["training"].update(batch_size="16"), "'training.batch_size' must be"),
        (lambda r: r["training"].update(seed=-1), "'training.seed' must be an integer ≥ 0"),
        (lambda r: r["training"].update(epochs=0), "'training.epochs' must be an integer ≥ 1"),
        (lambda r: r["training"].update(ema=2), "'training.ema' must be a number between"),
        (lambda r: r["data"]["spec"].update(channels="3"), "'data.spec.channels' must be"),
        (lambda r: r["data"]["spec"].update(class_names=[1]), "class_names' must be a list"),
        (lambda r: r["data"].update(limit=True), "'data.limit' must be an integer ≥ 1"),
        (lambda r: r["rng"].update(torch=123), "a generator state is not base64 text"),
        (lambda r: r["rng"].update(torch="AAAA"), "CPU generator state is not one torch wrote"),
        (lambda r: r["rng"].update(torch="A" * 6744), "CPU generator state is not one torch"),
        (lambda r: r["rng"].update(mps="AAAA"), "has an unknown generator 'mps'"),
        (lambda r: r.update(checkpoint="checkpoint-00000002"), "not the checkpoint of its"),
        (lambda r: r["optimizers"].update(d=5), "'optimizers.d' is not an optimizer's state"),
        (lambda r: r["checkpoint_sha256"].update(x="y"), "names 'x', not a checkpoint file"),
        (lambda r: r.update(format=2), "run format 2; this gentool"),
        (lambda r: r.update(format="1"), "'format' must be a positive integer"),
        (lambda r: r.update(format=1.0), "'format' must be a positive integer"),
        (lambda r: r.update(extra=1), "has an unknown field 'extra'"),
    ],
)
def test_a_hand_edited_run_json_is_refused_with_the_field_at_fault(trained, change, message):
    edit(trained, change)
    for command in (
        ["train", "dcgan", "--resume", "--run-dir", "run", "--epochs", "2"],
        ["sample", "dcgan", "--run", "run", "--device", "cpu"],
        ["report", "run"],
    ):
        assert message in one_line_error(invoke(*command)), command


def test_a_hand_edited_config_names_run_json_wherever_it_is_read(trained):
    edit(trained, lambda r: r["config"].update(lr="fast"))
    for command in (
        ["train", "dcgan", "--resume", "--run-dir", "run", "--epochs", "2"],
        ["sample", "dcgan", "--run", "run", "--device", "cpu"],
        ["eval", "dcgan", "--run", "run", "--device", "cpu"],
    ):
        line = one_line_error(invoke(*command))
        assert "run/run.json records a config that dcgan does not accept: option 'lr'" in line


def forge(run: Path, file_name: str, change) -> None:
    """Rewrite a checkpoint file through `change` and list its new digest in run.json, as a
    deliberate edit would: the digest alone cannot catch it."""
    record = json.loads((run / "run.json").read_text())
    path = run / record["checkpoint"] / file_name
    tensors = change(load_file(path))
    save_file(tensors, path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    edit(run, lambda r: r["checkpoint_sha256"].update({file_name: digest}))


def first_moment(tensors: dict) -> str:
    return next(name for name in tensors if name.endswith("exp_avg"))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda run: edit(run, lambda r: r["optimizers"]["g"]["param_groups"][0].update(lr="x")),
            "optimizer 'g' state in run does not fit: parameter group 0 has lr = 'x'",
        ),
        (  # gradient ascent, had it been restored
            lambda run: edit(run, lambda r: r["optimizers"]["g"]["param_groups"][0].update(lr=-1)),
            "parameter group 0 has lr = -1, where the plugin configures 0.0002",
        ),
        (  # infinite in float32, where the step computes with it
            lambda run: edit(
                run, lambda r: r["optimizers"]["d"]["param_groups"][0].update(lr=1e39)
            ),
            "parameter group 0 has lr = 1e+39, where the plugin configures 0.0002",
        ),
        (
            lambda run: edit(
                run, lambda r: r["optimizers"]["d"]["param_groups"][0].update(betas=[0.5])
            ),
            "parameter group 0 has betas = (0.5,), where the plugin configures (0.5, 0.999)",
        ),
        (
            lambda run: edit(run, lambda r: r["progress"].update(step_in_epoch=1)),
            "run.json's progress (epoch 1, step 1, global step 3) is not one training reaches",
        ),
        (
            lambda run: edit(run, lambda r: r["checkpoint_sha256"].pop("optim.safetensors")),
            "run.json lists digests of the checkpoint's other files, but none of",
        ),
        (
            lambda run: forge(
                run, "optim.safetensors", lambda t: t | {first_moment(t): torch.zeros(2)}
            ),
            "which does not fit the parameter's",
        ),
        (
            lambda run: forge(
                run,
                "optim.safetensors",
                lambda t: t | {first_moment(t): t[first_moment(t)] * float("nan")},
            ),
            "holds NaN or infinity",
        ),
    ],
)
def test_a_resume_refuses_state_that_training_never_saves(trained, change, message):
    change(trained)
    result = invoke("train", "dcgan", "--resume", "--run-dir", "run", "--epochs", "2")
    assert message in one_line_error(result)


def test_weights_edited_with_their_digest_are_refused_where_they_load(trained):
    forge(trained, "model.safetensors", lambda t: {k: v * float("inf") for k, v in t.items()})
    for command in (
        ["train", "dcgan", "--resume", "--run-dir", "run", "--epochs", "2"],
        ["sample", "dcgan", "--run", "run", "--device", "cpu"],
    ):
        assert "holds NaN or infinity in" in one_line_error(invoke(*command)), command


def test_a_checkpoint_replaced_while_it_is_loaded_loads_the_newer(trained, monkeypatch):
    load_model = RunFolder.load_model
    trained_on = []

    def load_after_training(self, record, model, **options):
        if not trained_on:  # a training of the run commits its next checkpoint meanwhile
            trained_on.append(record.checkpoint)
            resumed = invoke("train", "dcgan", "--resume", "--run-dir", "run", "--epochs", "2")
            assert resumed.exit_code == 0, resumed.output
        return load_model(self, record, model, **options)

    monkeypatch.setattr(RunFolder, "load_model", load_after_training)
    _, record, _ = load_trained(resolve("dcgan"), trained, torch.device("cpu"))
    assert trained_on == ["checkpoint-00000003"] and record.checkpoint == "checkpoint-00000006"


def test_a_run_that_keeps_an_average_never_samples_without_it(in_tmp):
    assert invoke("train", "dcgan", *TINY, "--ema", "0.9", "--run-dir", "run").exit_code == 0
    edit(in_tmp / "run", lambda r: r["checkpoint_sha256"].pop("ema.safetensors"))
    (entry,) = (in_tmp / "run").glob("checkpoint-*/ema.safetensors")
    entry.unlink()
    result = invoke("sample", "dcgan", "--run", "run", "--device", "cpu")
    assert "trains with --ema, but its checkpoint" in one_line_error(result)


def test_a_resume_never_drops_the_average_a_checkpoint_keeps(in_tmp):
    assert invoke("train", "dcgan", *TINY, "--ema", "0.9", "--run-dir", "run").exit_code == 0
    edit(in_tmp / "run", lambda r: r["training"].update(ema=None))
    before = every_file(in_tmp / "run")
    result = invoke("train", "dcgan", "--resume", "--run-dir", "run", "--epochs", "6")
    line = one_line_error(result)
    assert "run/run.json records no --ema, but its checkpoint checkpoint-" in line
    assert "keeps a moving average of the weights: was training.ema edited by hand?" in line
    assert every_file(in_tmp / "run") == before


@pytest.mark.parametrize(
    "lines",
    [
        ['{"step": "x", "loss_d": 1}', "[1, 2]", '{"step": -1}', "null", '"text"'],
        ['{"step": 50, "loss_d": "nan", "loss_g": {"a": 1}}', "{" * 5000],
        ['{"step": 60, "event": "epoch", "seconds": "long", "epoch": "one"}'],
        ["x" * (2**20 + 10), '{"step": 99, "loss_d": 0.5}'],
    ],
)
def test_foreign_lines_in_metrics_jsonl_are_left_out(trained, lines):
    with (trained / "metrics.jsonl").open("a") as file:
        file.write("\n".join(lines) + "\n")
    (trained / "epochs.jsonl").write_text("\n".join(lines) + "\n")
    assert invoke("report", "run", "--device", "cpu").exit_code == 0
    resumed = invoke("train", "dcgan", "--resume", "--run-dir", "run", "--epochs", "2")
    assert resumed.exit_code == 0, resumed.output
    kept = [json.loads(line)["step"] for line in (trained / "metrics.jsonl").open()]
    assert kept == list(range(1, 7))


def test_a_folder_in_place_of_metrics_jsonl_stops_training_in_one_line(trained):
    (trained / "metrics.jsonl").unlink()
    (trained / "metrics.jsonl").mkdir()
    result = invoke("train", "dcgan", "--resume", "--run-dir", "run", "--epochs", "2")
    assert "metrics.jsonl" in one_line_error(result)
    assert RunFolder(trained).read().checkpoint == "checkpoint-00000003"


def test_resume_without_runs_names_the_option_train_takes(in_tmp):
    result = invoke("train", "dcgan", "--resume")
    assert "pass --run-dir DIR" in one_line_error(result)


# A tiny DCGAN's checkpoint takes about 92 KiB (31 model, 61 optimizer), and a save holds two
# for a moment; 3 epochs need about 240 KiB.
@pytest.mark.parametrize("free_kib", [24, 60, 160, 220])
def test_a_real_full_disk_costs_no_saved_work_and_no_traceback(in_tmp, small_disk, free_kib):
    run = small_disk(free_kib) / "run"
    result = invoke("train", "dcgan", *TINY, "--epochs", "3", "--run-dir", str(run))
    line = one_line_error(result)
    assert "the disk is full (No space left on device); nothing was lost" in line
    assert f"once fixed, resume with: gentool train dcgan --resume --run-dir {run}" in line
    if free_kib < 30:  # not even the first checkpoint: no run, no folder
        assert "no checkpoint had been written yet" in line and not run.exists()
        return
    record = RunFolder(run).read()  # the last checkpoint, whole and verified
    assert f"the previous checkpoint {record.checkpoint} is intact" in line
    assert sorted(path.name for path in run.iterdir() if "checkpoint" in path.name) == [
        record.checkpoint
    ]
    load_trained(resolve("dcgan"), run, torch.device("cpu"))


def test_a_sample_grid_that_cannot_be_written_keeps_the_epoch(trained, read_only):
    read_only(trained / "samples")
    result = invoke("train", "dcgan", "--resume", "--run-dir", "run", "--epochs", "3")
    line = one_line_error(result)
    assert "could not write run/samples/epoch_0002.png: Read-only file system" in line
    assert "the last checkpoint in run is kept; once fixed, resume with" in line
    assert RunFolder(trained).read().progress.epoch == 2  # its checkpoint came first
    subprocess.run(["umount", "-l", str(trained / "samples")], check=True)
    finished = invoke("train", "dcgan", "--resume", "--run-dir", "run", "--epochs", "3")
    assert finished.exit_code == 0, finished.output
    assert sorted(path.name for path in (trained / "samples").iterdir()) == [
        "epoch_0001.png", "epoch_0002.png", "epoch_0003.png",
    ]  # fmt: skip


def test_the_last_epoch_unwritable_leaves_nothing_to_resume(trained, read_only):
    invoke("train", "dcgan", "--resume", "--run-dir", "run", "--epochs", "2")
    read_only(trained / "samples")
    result = invoke("train", "dcgan", "--resume", "--run-dir", "run", "--epochs", "3")
    line = one_line_error(result)
    assert "could not write run/samples/epoch_0003.png" in line
    assert "its training is complete" in line  # no resume to advise


def test_a_grid_lost_between_checkpoint_and_grid_is_drawn_on_resume(trained):
    grid = trained / "samples" / "epoch_0001.png"
    drawn = grid.read_bytes()
    grid.unlink()  # as a kill after the epoch's checkpoint and before its grid leaves it
    result = invoke("train", "dcgan", "--resume", "--run-dir", "run", "--epochs", "2")
    assert result.exit_code == 0, result.output
    assert grid.read_bytes() == drawn


def test_a_read_only_run_is_refused_in_one_line_and_left_as_it_was(trained, read_only, in_tmp):
    before = every_file(trained)
    read_only(trained)
    resumed = invoke("train", "dcgan", "--resume", "--run-dir", "run", "--epochs", "2")
    assert "cannot write in run folder run: it is read-only" in one_line_error(resumed)
    sampled = invoke("sample", "dcgan", "--run", "run", "--device", "cpu")
    assert "Read-only file system" in one_line_error(sampled)
    evaluated = invoke("eval", "dcgan", "--run", "run", "--n", "10", "--device", "cpu")
    assert "Read-only file system" in one_line_error(evaluated)
    assert every_file(trained) == before
    (in_tmp / "elsewhere").mkdir()
    out = invoke("sample", "dcgan", "--run", "run", "--device", "cpu", "--out", "elsewhere/a.png")
    assert out.exit_code == 0, out.output


@pytest.mark.parametrize(
    "out",
    [
        "run/run.json",
        "run/metrics.jsonl",
        "run/epochs.jsonl",
        "run/loss.png",
        "run/checkpoint-00000003/model.safetensors",
        "run/checkpoint-00000003/grid.png",
        "run/samples/epoch_0001.png",
        "run/.hidden.png",
    ],
)
def test_an_output_never_lands_on_a_file_of_the_run(trained, out):
    before = every_file(trained)
    for command in (
        ["sample", "dcgan", "--run", "run", "--device", "cpu", "--out", out],
        ["report", "run", "--out", out],
    ):
        assert "is a file of the run in run, which it would destroy" in one_line_error(
            invoke(*command)
        )
    assert every_file(trained) == before
    assert invoke("sample", "dcgan", "--run", "run", "--device", "cpu", "--out",
                  "run/samples/mine.png").exit_code == 0  # fmt: skip


def test_a_new_run_inside_another_run_is_refused(trained):
    result = invoke("train", "dcgan", *TINY, "--run-dir", "run/checkpoint-00000003/inner")
    assert "lies inside the run in run, whose saves would delete it" in one_line_error(result)


def test_output_to_a_device_writes_into_it_and_never_replaces_it(trained, in_tmp):
    result = invoke("sample", "dcgan", "--run", "run", "--device", "cpu", "--out", "/dev/null")
    assert result.exit_code == 0, result.output
    assert Path("/dev/null").is_char_device()
    os.mkfifo(in_tmp / "pipe.png")  # with no reader: an error, never a wait or a replacement
    fifo = invoke("sample", "dcgan", "--run", "run", "--device", "cpu", "--out", "pipe.png")
    assert "pipe.png: No such device or address" in one_line_error(fifo)
    assert (in_tmp / "pipe.png").is_fifo()


def test_a_resume_removes_only_the_checkpoint_folders_gentool_names(trained):
    mine = ["checkpoint-00000003-best", "checkpoint-best", "checkpoint-0000001", "Checkpoint-x"]
    for name in mine:
        shutil.copytree(trained / "checkpoint-00000003", trained / name)
    shutil.copytree(trained / "checkpoint-00000003", trained / "checkpoint-99999999")  # a kill's
    result = invoke("train", "dcgan", "--resume", "--run-dir", "run", "--epochs", "2")
    assert result.exit_code == 0, result.output
    kept = {path.name for path in trained.iterdir() if "heckpoint" in path.name}
    assert kept == {*mine, RunFolder(trained).read().checkpoint}


def test_output_through_a_link_lands_where_it_points_and_keeps_the_link(trained, in_tmp):
    (in_tmp / "kept.png").symlink_to("real.png")  # dangling: names the file to create
    assert invoke("sample", "dcgan", "--run", "run", "--device", "cpu", "--out",
                  "kept.png").exit_code == 0  # fmt: skip
    assert (in_tmp / "kept.png").is_symlink()
    assert (in_tmp / "real.png").read_bytes().startswith(b"\x89PNG")
    (in_tmp / "into-run.png").symlink_to("run/run.json")
    before = every_file(trained)
    refused = invoke("sample", "dcgan", "--run", "run", "--device", "cpu", "--out", "into-run.png")
    assert f"{in_tmp / 'run' / 'run.json'} is a file of the run in" in one_line_error(refused)
    assert every_file(trained) == before


def test_output_to_dev_stdout_redirected_to_a_file_never_replaces_the_link(trained, in_tmp):
    # /dev/stdout as gentool meets it when its output is redirected: a link to /proc/self/fd/1,
    # which names the file the shell opened. Replacing the link breaks it for every process.
    (in_tmp / "stdout.png").symlink_to("/proc/self/fd/1")
    with open(in_tmp / "redirected.png", "wb") as redirected:
        result = subprocess.run(
            [sys.executable, "-m", "gentool", "sample", "dcgan", "--run", "run", "--device",
             "cpu", "--out", "stdout.png"],
            stdout=redirected, stderr=subprocess.PIPE, text=True, timeout=120,
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (in_tmp / "stdout.png").is_symlink()
    assert (in_tmp / "redirected.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize("name", ["metrics.jsonl", "epochs.jsonl"])
def test_a_fifo_in_place_of_a_log_is_one_line_not_a_hang(trained, name):
    (trained / name).unlink()
    os.mkfifo(trained / name)
    result = invoke("train", "dcgan", "--resume", "--run-dir", "run", "--epochs", "2")
    assert f"{name}: not a regular file" in one_line_error(result)


@pytest.mark.parametrize(
    ("out", "message"),
    [
        ("folder", "folder: is a folder, not a file"),
        ("note.txt/a.png", "note.txt/a.png: a part of the path is a file, not a folder"),
    ],
)
def test_an_output_path_that_cannot_be_a_file_is_one_line(trained, in_tmp, out, message):
    (in_tmp / "folder").mkdir()
    (in_tmp / "note.txt").write_text("keep")
    result = invoke("sample", "dcgan", "--run", "run", "--device", "cpu", "--out", out)
    assert message in one_line_error(result)
    assert (in_tmp / "note.txt").read_text() == "keep"
