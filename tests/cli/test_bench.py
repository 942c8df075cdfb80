"""gentool bench: correctness before speed, and a wrong backend turns the run red."""

from __future__ import annotations

import json
from dataclasses import replace

import torch
from typer.testing import CliRunner

from gentool import bench
from gentool.cli import app
from gentool.plugins.dcgan import plugin as dcgan
from gentool.training.benchmark import bench_training
from tests.conftest import TINY_DCGAN_ARGS

runner = CliRunner()


def test_kernels_are_checked_then_timed(tmp_path):
    result = runner.invoke(
        app,
        ["bench", "kernels", "--sizes", "small", "--backends", "eager,torch,triton",
         "--device", "cpu", "--json", str(tmp_path / "bench.json")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "bench.json").read_text())
    assert report["ceiling_gbps"] > 0
    rows = {(row["op"], row["backend"]): row for row in report["results"]}
    assert {op for op, _ in rows} == set(bench.OPS)
    for op in bench.OPS:
        for backend in ("eager", "torch"):
            assert rows[op, backend]["status"] == "ok"
            assert rows[op, backend]["max_error"] < 1e-4 and rows[op, backend]["median_ms"] > 0
        assert rows[op, "torch"]["speedup"] > 0
        assert rows[op, "triton"]["status"] == "skipped"
        assert rows[op, "triton"]["reason"] == "Triton kernels need a CUDA device"
    assert rows["convt_bn_relu", "eager"]["tflops"] > 0


def test_a_wrong_backend_is_shown_failed_and_fails_the_command(monkeypatch):
    def slightly_wrong(inputs, eps):
        z, kl = bench.REPARAM_KL.backends["eager"](inputs, eps)
        return z * 1.01, kl

    backends = {**bench.REPARAM_KL.backends, "wrong": slightly_wrong}
    monkeypatch.setitem(bench.OPS, "reparam_kl", replace(bench.REPARAM_KL, backends=backends))
    result = runner.invoke(
        app,
        ["bench", "kernels", "--sizes", "small", "--backends", "eager,wrong", "--device", "cpu"],
    )
    assert result.exit_code == 1
    assert "FAILED" in result.output
    assert "1 results disagree with the reference: reparam_kl/wrong" in result.output


def test_bad_bench_options_are_one_line_errors():
    for args, message in [
        (["--sizes", "huge"], "--sizes must be one of small, dcgan, large"),
        (["--dtype", "float16"], "--dtype must be one of float32, bfloat16"),
        (["--op", "nope"], "--op must be one of reparam_kl, convt_bn_relu"),
    ]:
        result = runner.invoke(app, ["bench", "kernels", *args])
        assert result.exit_code == 1 and message in result.output, result.output


def test_training_steps_are_timed_per_variant():
    result = runner.invoke(
        app,
        ["bench", "train", "dcgan", *TINY_DCGAN_ARGS, "-b", "8", "--steps", "2",
         "--variants", "eager,fused", "--device", "cpu"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    results = bench_training(
        dcgan,
        dcgan.parse_config(dcgan.test_config),
        batch_size=8,
        device=torch.device("cpu"),
        variants=["eager", "fused"],
        steps=2,
    )
    eager, fused = results
    assert eager.status == "ok" and eager.images_per_second > 0 and eager.speedup == 1.0
    assert fused.status == "skipped" and "CUDA" in fused.reason
