"""Every rule of a training request holds for a Python caller exactly as for the command line:
the same refusal, the same message, and nothing read or written before it."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from rich.console import Console

from gentool.errors import GentoolError
from gentool.registry import resolve
from gentool.training import Acceleration, TrainRequest, run_training
from gentool.training.request import plan_training
from tests.conftest import TINY_DCGAN

REFUSED: list[tuple[dict, str]] = [
    ({"overwrite": True, "resume": True, "run_dir": Path("run")}, "--overwrite and --resume"),
    ({"overwrite": True}, "--overwrite needs --run-dir, the run to replace"),
    ({"resume": True, "config_values": {"lr": 1}}, "--option cannot be given with --resume"),
    ({"resume": True, "config_file": Path("c.toml")}, "--config cannot be given with --resume"),
    ({"resume": True, "lr": 0.1}, "--lr cannot be given with --resume"),
    ({"resume": True, "batch_size": 8}, "--batch-size cannot be given with --resume"),
    ({"resume": True, "seed": 3}, "--seed cannot be given with --resume"),
    ({"resume": True, "limit": 10}, "--limit cannot be given with --resume"),
    ({"resume": True, "ema": 0.9}, "--ema cannot be given with --resume"),
    ({"eval_n": 100}, "--eval-n set how --eval-every N evaluates: add it"),
    ({"eval_metrics": "fid"}, "--eval-metrics set how --eval-every N evaluates: add it"),
    ({"eval_features": "builtin"}, "--eval-features set how --eval-every N evaluates"),
    ({"eval_every": 1, "eval_features": "nope"}, "unknown --eval-features 'nope'"),
    ({"eval_every": 1, "eval_metrics": "sharp"}, "unknown --eval-metrics sharp"),
    ({"eval_every": 1, "eval_metrics": ("recon",)}, "dcgan does not reconstruct images"),
    ({"eval_every": 1, "eval_n": 5}, "--eval-n must be at least 10, got 5"),
    ({"eval_every": 0}, "--eval-every must be at least 1, got 0"),
    ({"epochs": 0}, "--epochs must be at least 1, got 0"),
    ({"epochs": 10**20}, f"--epochs must be at most {2**63 - 1}, got {10**20}"),
    ({"lr": "1e-400"}, "option 'lr' of dcgan must be float >= 0, not so small that float32"),
    ({"batch_size": 0}, "--batch-size must be at least 1, got 0"),
    ({"limit": 0}, "--limit must be at least 1, got 0"),
    ({"log_every": 0}, "--log-every must be at least 1, got 0"),
    ({"seed": -1}, "--seed must be between 0 and"),
    ({"seed": 2**63}, "--seed must be between 0 and"),
    ({"ema": 1.5}, "--ema 1.5 must lie between 0 and 1"),
    ({"ema": float("nan")}, "--ema nan must lie between 0 and 1"),
    ({"config_values": {"lr": "fast"}}, "option 'lr' of dcgan must be float >= 0"),
    ({"config_values": {"latnet_dim": 3}}, "did you mean 'latent_dim'?"),
    ({"lr": -1.0}, "option 'lr' of dcgan must be float >= 0, got -1.0"),
    ({"config_file": Path("missing.toml")}, "config file missing.toml does not exist"),
    ({"acceleration": Acceleration(kernels="fastest")}, "--kernels 'fastest' is not a kernel"),
    (
        {"acceleration": Acceleration(kernels="triton", compile=True)},
        "--kernels triton and --compile cannot go together",
    ),
    (
        {"acceleration": Acceleration(kernels="triton", sync_bn=True)},
        "--kernels triton and --sync-bn cannot go together",
    ),
    ({"device": "tpu"}, "unknown --device 'tpu'"),
    ({"device": "meta"}, "--device meta is not supported"),
]


@pytest.mark.parametrize(("fields", "message"), REFUSED, ids=[case[1] for case in REFUSED])
def test_a_python_caller_is_refused_what_the_command_line_is(fields, message, in_tmp):
    request = TrainRequest(entry=resolve("dcgan"), **{"config_values": TINY_DCGAN, **fields})
    with pytest.raises(GentoolError, match=re.escape(message)):
        run_training(request, Console(file=io.StringIO()))
    assert list(in_tmp.iterdir()) == []  # nothing read into a run, nothing written


def test_a_batch_that_does_not_split_over_the_processes_is_refused_before_they_start():
    request = TrainRequest(entry=resolve("dcgan"), batch_size=3)
    with pytest.raises(GentoolError, match="--batch-size 3 does not split over 2 processes"):
        plan_training(request, world_size=2)


def test_the_environment_names_the_kernel_backend_only_when_the_request_does_not(monkeypatch):
    monkeypatch.setenv("GENTOOL_KERNELS", "torch")
    entry = resolve("dcgan")
    assert plan_training(TrainRequest(entry)).acceleration.kernels == "torch"
    chosen = TrainRequest(entry, acceleration=Acceleration(kernels="auto"))
    assert plan_training(chosen).acceleration.kernels == "auto"
    monkeypatch.setenv("GENTOOL_KERNELS", "fastest")
    with pytest.raises(GentoolError, match="GENTOOL_KERNELS='fastest' is not a kernel backend"):
        plan_training(TrainRequest(entry))


def test_kernels_triton_refuses_a_model_whose_fused_blocks_run_as_plain_layers(in_tmp):
    from dataclasses import replace

    from torch import nn

    from tests.conftest import entry_for

    dcgan = resolve("dcgan")

    def build(config, spec):
        model = dcgan.plugin.build(config, spec)
        first_block = model.generator.net[0]
        first_block[1] = nn.GroupNorm(1, first_block[1].num_features)  # no longer BatchNorm2d
        return model

    entry = entry_for(replace(dcgan.plugin, build=build), dcgan)
    request = TrainRequest(
        entry, config_values=TINY_DCGAN, limit=16, batch_size=8, device="cpu",
        acceleration=Acceleration(kernels="triton"),
    )  # fmt: skip
    with pytest.raises(GentoolError, match=r"--kernels triton cannot run the fused blocks "):
        run_training(request, Console(file=io.StringIO()))
    assert list(in_tmp.iterdir()) == []


def test_kernels_triton_that_cannot_launch_fails_before_any_step(in_tmp, monkeypatch):
    from gentool.kernels import preflight

    def broken(device, dtype):
        raise RuntimeError("ptxas fatal: unsupported GPU")

    monkeypatch.setattr(preflight, "probe_reparameterize_kl", broken)
    request = TrainRequest(
        resolve("dcgan"), config_values=TINY_DCGAN, limit=16, batch_size=8, device="cpu",
        acceleration=Acceleration(kernels="triton"),
    )  # fmt: skip
    with pytest.raises(GentoolError, match=r"reparameterize_kl.*ptxas fatal.*--kernels auto"):
        run_training(request, Console(file=io.StringIO()))
    assert list(in_tmp.iterdir()) == []
