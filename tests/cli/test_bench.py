"""gentool bench: correctness before speed, and a wrong backend turns the run red."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from typer.testing import CliRunner

from gentool import bench
from gentool.cli import app
from gentool.kernels.dispatch import triton_import_error
from gentool.plugins.dcgan import plugin as dcgan
from gentool.training.benchmark import bench_training
from tests.conftest import TINY_DCGAN_ARGS

runner = CliRunner()


def test_kernels_are_checked_then_timed(tmp_path):
    result = runner.invoke(
        app,
        ["bench", "kernels", "--sizes", "small", "--backends", "eager,torch,triton,triton-gemm",
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
        for backend in bench.OPS[op].triton_backends:
            assert rows[op, backend]["status"] == "skipped"
            assert rows[op, backend]["reason"] == "Triton kernels need a CUDA device"
    assert ("reparam_kl", "triton-gemm") not in rows  # an op is timed on its own backends only
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


@pytest.mark.skipif(triton_import_error() is not None, reason="--static compiles with Triton")
def test_static_report_compiles_every_launch_for_the_target(tmp_path, static_rows):
    result = runner.invoke(
        app,
        ["bench", "kernels", "--static", "--target", "sm_90", "--json", str(tmp_path / "s.json")],
    )
    assert result.exit_code == 0, result.output
    assert "sm_90 (H100 SXM5 80GB)" in result.output
    report = json.loads((tmp_path / "s.json").read_text())
    assert set(report["targets"]) == {"sm_90"}
    rows = report["launches"]
    kernels = {row["launch"]["kernel"] for row in rows}
    assert {"_convt_gemm", "_scale_shift_relu", "_reparam_kl_forward"} <= kernels
    for row in rows:
        assert row["target"] == "sm_90" and row["error"] is None and row["violations"] == []
        assert row["resources"]["registers"] > 0 and 0 < row["occupancy"] <= 1
        assert row["sources"] and row["programs"]


def test_bad_bench_options_are_one_line_errors():
    for args, message in [
        (["--sizes", "huge"], "--sizes must be one of small, dcgan, large"),
        (["--dtype", "float16"], "--dtype must be one of float32, bfloat16"),
        (["--op", "nope"], "--op must be one of reparam_kl, convt_bn_relu"),
        (["--static", "--target", "sm_75"], "--target must be one of sm_80, sm_90; got 'sm_75'"),
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
