"""--amp, --compile, --channels-last, --sync-bn, --ema and --nproc."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from typer.testing import CliRunner

import gentool.cli
import gentool.training.speed
from gentool.api import DataSpec
from gentool.checkpoint import RunFolder
from gentool.cli import app
from gentool.errors import GentoolError, Interrupted, TrainingError
from gentool.kernels import ConvTransposeBNReLU
from gentool.models import load_trained
from gentool.plugins.dcgan.model import DCGAN
from gentool.registry import discover, resolve
from gentool.training.benchmark import bench_training
from gentool.training.ema import ExponentialMovingAverage
from gentool.training.speed import Acceleration, mixed_precision, prepare_model
from gentool.training.step import train_step
from tests.conftest import TINY_DCGAN, TINY_DCGAN_ARGS, entry_for
from tests.test_train import checkpoint_tensors, logged_losses, train

TINY_AE = {"image_size": 8, "hidden": (16,), "code_dim": 4}


def watching(entry, seen: list):
    """The tiny DCGAN, noting the dtype and memory layout of what its discriminator is given
    and what its generator makes."""

    def build(config, spec):
        model = DCGAN(config, spec)
        model.discriminator.register_forward_pre_hook(
            lambda module, inputs: seen.append(
                (
                    "d input",
                    inputs[0].dtype,
                    inputs[0].is_contiguous(memory_format=torch.channels_last),
                )
            )
        )
        model.generator.register_forward_hook(
            lambda module, inputs, output: seen.append(("g output", output.dtype, None))
        )
        return model

    return entry_for(replace(entry.plugin, build=build), entry)


def test_amp_trains_in_bfloat16_autocast_and_saves_float32_weights(
    dcgan_entry, tmp_path, tiny_cpu_training
):
    seen: list = []
    train(
        watching(dcgan_entry, seen), tmp_path / "run", epochs=1, acceleration=Acceleration(amp=True)
    )
    assert ("g output", torch.bfloat16, None) in seen  # convolutions ran in bfloat16
    losses = logged_losses(tmp_path / "run")
    assert len(losses) == 3 and all(np.isfinite(line["loss_d"]) for line in losses)
    weights = load_file(next((tmp_path / "run").glob("checkpoint-*")) / "model.safetensors")
    assert {value.dtype for value in weights.values()} <= {torch.float32, torch.int64}


@pytest.mark.parametrize("has_bfloat16", [True, False])
def test_amp_warns_on_a_cpu_that_emulates_bfloat16(has_bfloat16, monkeypatch, recwarn):
    """On such a CPU (AVX2 alone) a cdcgan step took 11 times as long under --amp."""
    monkeypatch.setattr(gentool.training.speed, "cpu_has_bfloat16", lambda: has_bfloat16)
    autocast, scaler = mixed_precision(torch.device("cpu"), True)
    assert autocast.fast_dtype == torch.bfloat16 and scaler is None
    warned = [str(warning.message) for warning in recwarn]
    if has_bfloat16:
        assert warned == []
    else:
        assert len(warned) == 1 and "leave --amp out on this machine" in warned[0]


def test_channels_last_feeds_nhwc_batches_and_trains_like_the_default(
    dcgan_entry, tmp_path, tiny_cpu_training
):
    seen: list = []
    train(
        watching(dcgan_entry, seen),
        tmp_path / "nhwc",
        epochs=1,
        acceleration=Acceleration(channels_last=True),
    )
    assert ("d input", torch.float32, True) in seen
    train(dcgan_entry, tmp_path / "plain", epochs=1)
    nhwc, plain = checkpoint_tensors(tmp_path / "nhwc"), checkpoint_tensors(tmp_path / "plain")
    assert nhwc.keys() == plain.keys()
    for key, value in plain.items():
        torch.testing.assert_close(nhwc[key], value, rtol=1e-4, atol=1e-5, msg=key)


def test_compile_trains_and_keeps_the_plain_checkpoint_keys(tmp_path, tiny_cpu_training):
    ae = resolve("ae")
    torch._dynamo.reset()
    summary, _ = train(
        ae, tmp_path / "compiled", epochs=1, config=TINY_AE, acceleration=Acceleration(compile=True)
    )
    compiled_frames = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    assert compiled_frames > 0 and summary.steps == 3
    train(ae, tmp_path / "eager", epochs=1, config=TINY_AE)
    compiled, eager = (
        checkpoint_tensors(tmp_path / "compiled"),
        checkpoint_tensors(tmp_path / "eager"),
    )
    assert compiled.keys() == eager.keys()  # no "_orig_mod." in the names
    for key, value in eager.items():
        torch.testing.assert_close(compiled[key], value, rtol=1e-4, atol=1e-5, msg=key)


def test_bench_train_times_each_variant_with_amp_under_autocast(tiny_cpu_training, monkeypatch):
    import gentool.training.benchmark as benchmark

    autocast_states = []

    def recording_step(*args):
        autocast_states.append(torch.is_autocast_enabled("cpu"))
        return train_step(*args)

    monkeypatch.setattr(benchmark, "train_step", recording_step)
    dcgan = resolve("dcgan").plugin
    results = bench_training(
        dcgan,
        dcgan.parse_config(TINY_DCGAN),
        batch_size=8,
        device=torch.device("cpu"),
        variants=["eager", "channels-last", "amp", "amp+channels-last"],
        steps=1,
    )
    assert [(result.variant, result.status) for result in results] == [
        ("eager", "ok"),
        ("channels-last", "ok"),
        ("amp", "ok"),
        ("amp+channels-last", "ok"),
    ]
    steps = benchmark.WARMUP_STEPS + 1
    assert autocast_states == [False] * 2 * steps + [True] * 2 * steps


BUILTIN_MODELS = [entry.name for entry in discover() if entry.distribution == "gentool"]


@pytest.mark.parametrize("name", BUILTIN_MODELS)
def test_every_builtin_model_trains_under_amp(name, tiny_cpu_training):
    """A step under bfloat16 autocast, as --amp runs it: deep-ae's CD-1 wrote bfloat16
    gradients into float32 parameters until its gradients took their parameters' dtype."""
    plugin = resolve(name).plugin
    results = bench_training(
        plugin,
        plugin.parse_config(plugin.test_config),
        batch_size=4,
        device=torch.device("cpu"),
        variants=["amp"],
        steps=1,
    )
    assert (results[0].status, results[0].reason) == ("ok", "")


def test_a_failing_compile_is_one_clear_error(tmp_path, monkeypatch):
    import torch._inductor.compile_fx

    def no_compiler(*args, **kwargs):
        raise RuntimeError("no C compiler found")

    monkeypatch.setattr(torch._inductor.compile_fx, "compile_fx", no_compiler)
    torch._dynamo.reset()
    with pytest.raises(
        TrainingError, match=r"torch.compile failed on ae \(.*no C compiler.*run without --compile"
    ):
        train(
            resolve("ae"),
            tmp_path / "run",
            epochs=1,
            config=TINY_AE,
            acceleration=Acceleration(compile=True),
        )
    torch._dynamo.reset()


def test_sync_bn_converts_every_batchnorm_without_changing_the_checkpoint():
    plain = DCGAN(resolve("dcgan").plugin.parse_config(TINY_DCGAN), DataSpec(3, 16, 16))
    keys = list(plain.state_dict())
    model = prepare_model(plain, Acceleration(sync_bn=True))
    fused = [module for module in model.modules() if isinstance(module, ConvTransposeBNReLU)]
    assert fused and all(isinstance(block[1], nn.SyncBatchNorm) for block in fused)
    assert not [
        module
        for module in model.modules()
        if isinstance(module, nn.BatchNorm2d) and not isinstance(module, nn.SyncBatchNorm)
    ]
    assert list(model.state_dict()) == keys
    images = model.generator(torch.randn(4, TINY_DCGAN["latent_dim"]))  # one process: plain BN
    assert images.shape == (4, 3, 16, 16)


def test_sync_bn_between_cpu_processes_is_refused(dcgan_entry, tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(GentoolError, match="--sync-bn needs CUDA devices"):
        train(dcgan_entry, tmp_path / "run", epochs=1, acceleration=Acceleration(sync_bn=True))
    assert not (tmp_path / "run").exists()


def test_the_moving_average_follows_its_formula():
    model = nn.Sequential(nn.Linear(1, 1, bias=False), nn.BatchNorm1d(1))
    with torch.no_grad():
        model[0].weight.fill_(1.0)
    ema = ExponentialMovingAverage(model, decay=0.75)
    for weight, running_mean in ((3.0, 0.5), (-1.0, 0.25)):
        with torch.no_grad():
            model[0].weight.fill_(weight)
            model[1].running_mean.fill_(running_mean)
        ema.update(model)
    # 0.75·1 + 0.25·3 = 1.5, then 0.75·1.5 + 0.25·(−1) = 0.875; buffers are copied.
    assert ema.state_dict()["0.weight"].item() == pytest.approx(0.875)
    assert ema.state_dict()["1.running_mean"].item() == 0.25
    with ema.applied_to(model):
        assert model[0].weight.item() == pytest.approx(0.875)
    assert model[0].weight.item() == -1.0


def test_ema_is_checkpointed_resumed_exactly_and_sampled_from(
    dcgan_entry, tmp_path, monkeypatch, tiny_cpu_training
):
    train(dcgan_entry, tmp_path / "straight", epochs=2, ema=0.9)
    train(dcgan_entry, tmp_path / "resumed", epochs=1, ema=0.9)
    train(dcgan_entry, tmp_path / "resumed", epochs=2, resume=True)
    averages = [
        load_file(run / RunFolder(run).read().checkpoint / "ema.safetensors")
        for run in (tmp_path / "straight", tmp_path / "resumed")
    ]
    weights = checkpoint_tensors(tmp_path / "straight")
    assert averages[0].keys() == {key for key in weights if not key.startswith("optim/")}
    assert all(torch.equal(averages[0][key], averages[1][key]) for key in averages[0])
    assert not torch.equal(
        averages[0]["generator.net.0.0.weight"], weights["generator.net.0.0.weight"]
    )

    run = tmp_path / "straight"
    averaged, _, _ = load_trained(dcgan_entry, run, torch.device("cpu"), averaged=True)
    raw, _, _ = load_trained(dcgan_entry, run, torch.device("cpu"))
    assert all(torch.equal(value, averages[0][key]) for key, value in averaged.state_dict().items())
    assert all(torch.equal(value, weights[key]) for key, value in raw.state_dict().items())
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    for name, extra in (("ema.npz", []), ("raw.npz", ["--raw-weights"])):
        result = runner.invoke(
            app,
            [
                "sample",
                "dcgan",
                "--run",
                str(run),
                "--n",
                "4",
                "--format",
                "npz",
                "--out",
                name,
                *extra,
            ],
        )
        assert result.exit_code == 0, result.output
    assert not np.array_equal(np.load("ema.npz")["images"], np.load("raw.npz")["images"])


def test_ema_decay_must_lie_between_0_and_1(dcgan_entry, tmp_path):
    with pytest.raises(GentoolError, match="--ema 1.5 must lie between 0 and 1"):
        train(dcgan_entry, tmp_path / "run", epochs=1, ema=1.5)
    assert not (tmp_path / "run").exists()


class FakeTorchrun:
    """Stands in for the torchrun process `gentool train --nproc` starts."""

    def __init__(self, exit_code: int, interrupted: bool = False) -> None:
        self.exit_code, self.interrupted = exit_code, interrupted
        self.commands: list[list[str]] = []

    def __call__(self, command: list[str], env: dict[str, str] | None = None) -> FakeTorchrun:
        self.commands.append(command)
        return self

    def wait(self) -> int:
        if self.interrupted:  # the first Ctrl-C: the workers are still saving
            self.interrupted = False
            raise KeyboardInterrupt
        return self.exit_code


@pytest.mark.parametrize(("exit_code", "interrupted"), [(0, False), (3, False), (1, True)])
def test_nproc_runs_the_same_command_under_torchrun(exit_code, interrupted, monkeypatch):
    arguments = ["train", "dcgan", *TINY_DCGAN_ARGS, "--nproc", "2", "--epochs", "1"]
    monkeypatch.setattr("sys.argv", ["gentool", *arguments])
    monkeypatch.delenv("RANK", raising=False)
    torchrun = FakeTorchrun(exit_code, interrupted)
    monkeypatch.setattr(gentool.cli.train.subprocess, "Popen", torchrun)
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == (130 if interrupted else exit_code)
    (command,) = torchrun.commands
    launcher = ["-m", "gentool.launcher", "--standalone", "--nproc-per-node", "2"]
    assert command[1:] == [
        *launcher,
        "-m",
        "--",
        "gentool",
        "train",
        "dcgan",
        *TINY_DCGAN_ARGS,
        "--epochs",
        "1",
    ]


def test_nproc_checks_that_the_batch_splits_before_starting_torchrun(monkeypatch):
    arguments = ["train", "dcgan", "--nproc", "3", "--batch-size", "16"]
    monkeypatch.setattr("sys.argv", ["gentool", *arguments])
    torchrun = FakeTorchrun(0)
    monkeypatch.setattr(gentool.cli.train.subprocess, "Popen", torchrun)
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 1
    assert "error: --batch-size 16 does not split over 3 processes" in result.output
    assert torchrun.commands == []


@pytest.mark.parametrize(("rank", "shown"), [("0", True), ("1", False)])
def test_a_stop_under_torchrun_is_reported_by_rank_0_alone(rank, shown, monkeypatch):
    def stopped(request, console):
        raise Interrupted("SIGINT: stopped at epoch 1, step 2/3, checkpoint saved")

    monkeypatch.setattr("gentool.training.run_training", stopped)
    monkeypatch.setenv("RANK", rank)
    result = CliRunner().invoke(app, ["train", "dcgan", "--device", "cpu"])
    assert result.exit_code == 130
    assert ("stopped: SIGINT" in result.output) == shown
