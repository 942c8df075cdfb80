"""benches/verdict.py, the closing table of benches/gpu.sh, on results written here by hand."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def verdict():
    """benches/verdict.py, a script rather than a package module, loaded from its file."""
    spec = importlib.util.spec_from_file_location("verdict", ROOT / "benches" / "verdict.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # where its dataclasses look themselves up
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def kernel_row(op, shape, backend, median_ms, ceiling_percent=None, status="ok"):
    return {
        "op": op,
        "shape": shape,
        "backend": backend,
        "status": status,
        "median_ms": median_ms,
        "ceiling_percent": ceiling_percent,
    }


def write(folder: Path, name: str, data) -> None:
    (folder / name).write_text(json.dumps(data))


def results(tmp_path, verdict):
    verdict.main(tmp_path)
    table = json.loads((tmp_path / "verdict.json").read_text())
    return {row["target"]: row for row in table}


def test_each_target_is_met_or_not_from_the_figures(tmp_path, verdict, capsys):
    large = [4096, 4096]
    write(tmp_path, "kernels-large.json", {"results": [
        kernel_row("reparam_kl", large, "eager", 3.0),
        kernel_row("reparam_kl", large, "compile", 1.2),
        kernel_row("reparam_kl", large, "triton", 1.0, ceiling_percent=90.0),
    ]})  # fmt: skip
    block = [128, 512, 256, 4]
    write(tmp_path, "kernels-dcgan.json", {"results": [
        kernel_row("convt_bn_relu", block, "eager", 1.3),
        kernel_row("convt_bn_relu", block, "compile", 1.05),
        kernel_row("convt_bn_relu", block, "triton", 1.0),
        kernel_row("convt_bn_relu", block, "triton-gemm", 2.0, status="failed"),
    ]})  # fmt: skip
    write(tmp_path, "convt-blocks.json", {"benchmarks": [
        {"params": {"backend": backend, "block_name": "8x8", "mode": mode},
         "stats": {"median": median}}
        for backend, mode, median in [
            ("eager", "eval-forward", 3.0), ("triton", "eval-forward", 2.0),
            ("eager", "conv-only", 1.0), ("triton-gemm", "conv-only", 1.5),
        ]
    ]})  # fmt: skip
    write(tmp_path, "train-dcgan.json", {"results": [
        {"variant": "eager", "status": "ok", "speedup": 1.0},
        {"variant": "fused", "status": "ok", "speedup": 1.25},
    ]})  # fmt: skip
    write(tmp_path, "data-prefetch.json", {"batches_equal": True, "ratio": 1.031})
    table = results(tmp_path, verdict)

    reparam = "reparam+KL, 16M elements, float32"
    assert table[f"{reparam}: bandwidth"] == {
        "target": f"{reparam}: bandwidth",
        "goal": "≥ 85% of copy",
        "measured": "90% of copy",
        "status": "met",
    }
    assert table[f"{reparam}: vs eager"]["measured"] == "3.00×"
    assert table[f"{reparam}: vs eager"]["status"] == "met"
    assert table[f"{reparam}: vs compile"]["status"] == "met"
    step = "ConvTransposeBNReLU 128×512×256×4 training step"
    assert table[f"{step}, triton vs eager"]["status"] == "met"  # 1.30×
    assert table[f"{step}, triton vs compile"]["status"] == "not met"  # 1.05×
    assert table[f"{step}, triton-gemm vs eager"]["status"] == "not measured"  # a failed run
    assert table["ConvTransposeBNReLU 8x8 eval forward, triton"]["status"] == "met"  # 1.50×
    assert table["Triton GEMM 8x8 convolution alone"]["measured"] == "0.67× cuDNN"
    assert table["Triton GEMM 8x8 convolution alone"]["status"] == "not met"
    assert table["DCGAN training step (fused kernels)"]["status"] == "met"
    fed = table["DCGAN step fed by the batch loader"]
    assert (fed["measured"], fed["status"]) == ("1.031×", "not met")
    printed = capsys.readouterr().out
    assert printed.splitlines()[0].split() == ["target", "goal", "measured", "verdict"]
    assert f"{reparam}: bandwidth" in printed


def test_missing_results_are_not_measured(tmp_path, verdict):
    table = results(tmp_path, verdict)
    assert len(table) == 3 + 4 * 2 * 2 + 4 * 3 + 1 + 1
    assert {row["status"] for row in table.values()} == {"not measured"}
    assert {row["measured"] for row in table.values()} == {"–"}
