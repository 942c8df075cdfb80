"""The verdict of benches/gpu.sh: each speed target of docs/benchmarks.md, its figure, met or not.

    python benches/verdict.py OUT    # reads OUT/*.json, prints the table, writes OUT/verdict.json

Reads what gpu.sh wrote: kernels-large.json and kernels-dcgan.json (`gentool bench kernels`),
convt-blocks.json (pytest-benchmark's JSON of benches/test_convt_bn_relu.py), train-dcgan.json
(training steps per variant) and data-prefetch.json (benches/data_prefetch.py). A target whose
figures are missing, or whose run failed, is "not measured", which is not met.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

LARGE_REPARAM = [4096, 4096]  # 16M elements
BLOCK_BACKENDS = ("triton", "triton-gemm")  # auto's ConvTransposeBNReLU, then the all-Triton one


@dataclass
class Verdict:
    target: str
    goal: str
    measured: str
    status: str  # "met", "not met" or "not measured"


def verdicts(out: Path) -> list[Verdict]:
    return [
        *_reparam_verdicts(_read(out / "kernels-large.json")),
        *_block_step_verdicts(_read(out / "kernels-dcgan.json")),
        *_block_suite_verdicts(_read(out / "convt-blocks.json")),
        *_training_verdicts(_read(out / "train-dcgan.json")),
        *_prefetch_verdicts(_read(out / "data-prefetch.json")),
    ]


def _reparam_verdicts(report: dict[str, Any] | None) -> Iterator[Verdict]:
    rows = _rows(report, "reparam_kl", LARGE_REPARAM)
    triton, eager, compiled = rows.get("triton"), rows.get("eager"), rows.get("compile")
    name = "reparam+KL, 16M elements, float32"
    yield _judge(
        f"{name}: bandwidth",
        "≥ 85% of copy",
        triton and triton["ceiling_percent"],
        lambda percent: percent >= 85,
        "{:.0f}% of copy",
    )
    yield _judge(
        f"{name}: vs eager",
        "≥ 3× eager",
        _ratio(eager, triton),
        lambda ratio: ratio >= 3,
        "{:.2f}×",
    )
    yield _judge(
        f"{name}: vs compile",
        "≥ 1× compile",
        _ratio(compiled, triton),
        lambda ratio: ratio >= 1,
        "{:.2f}×",
    )


def _block_step_verdicts(report: dict[str, Any] | None) -> Iterator[Verdict]:
    shapes = [[128, 100, 512, 1], [128, 512, 256, 4], [128, 256, 128, 8], [128, 128, 64, 16]]
    for shape in shapes:
        rows = _rows(report, "convt_bn_relu", shape)
        for backend in BLOCK_BACKENDS:
            name = f"ConvTransposeBNReLU {'×'.join(map(str, shape))} training step, {backend}"
            yield _judge(
                f"{name} vs eager",
                "≥ 1.3× eager",
                _ratio(rows.get("eager"), rows.get(backend)),
                lambda ratio: ratio >= 1.3,
                "{:.2f}×",
            )
            yield _judge(
                f"{name} vs compile",
                "≥ 1.1× compile",
                _ratio(rows.get("compile"), rows.get(backend)),
                lambda ratio: ratio >= 1.1,
                "{:.2f}×",
            )


def _block_suite_verdicts(report: dict[str, Any] | None) -> Iterator[Verdict]:
    medians: dict[tuple[str, str, str], float] = {}
    for case in (report or {}).get("benchmarks", []):
        params = case["params"]
        medians[params["backend"], params["block_name"], params["mode"]] = case["stats"]["median"]
    for block in ("4x4", "8x8", "16x16", "32x32"):
        for backend in BLOCK_BACKENDS:
            eager = medians.get(("eager", block, "eval-forward"))
            fused = medians.get((backend, block, "eval-forward"))
            yield _judge(
                f"ConvTransposeBNReLU {block} eval forward, {backend}",
                "≥ 1.5× eager",
                eager / fused if eager and fused else None,
                lambda ratio: ratio >= 1.5,
                "{:.2f}×",
            )
        cudnn = medians.get(("eager", block, "conv-only"))
        gemm = medians.get(("triton-gemm", block, "conv-only"))
        yield _judge(
            f"Triton GEMM {block} convolution alone",
            "≥ 0.8× cuDNN's speed",
            cudnn / gemm if cudnn and gemm else None,
            lambda ratio: ratio >= 0.8,
            "{:.2f}× cuDNN",
        )


def _training_verdicts(report: dict[str, Any] | None) -> Iterator[Verdict]:
    variants = {row["variant"]: row for row in (report or {}).get("results", [])}
    fused = variants.get("fused", {})
    yield _judge(
        "DCGAN training step (fused kernels)",
        "≥ 1.2× eager",
        fused.get("speedup") if fused.get("status") == "ok" else None,
        lambda ratio: ratio >= 1.2,
        "{:.2f}×",
    )


def _prefetch_verdicts(report: dict[str, Any] | None) -> Iterator[Verdict]:
    report = report or {}
    yield _judge(
        "DCGAN step fed by the batch loader",
        "≤ 1.02× a step on a batch on the device",
        report.get("ratio") if report.get("batches_equal") else None,
        lambda ratio: ratio <= 1.02,
        "{:.3f}×",
    )


def _judge(
    target: str,
    goal: str,
    figure: float | None,
    meets: Callable[[float], bool],
    template: str,
) -> Verdict:
    if figure is None:
        return Verdict(target, goal, "–", "not measured")
    return Verdict(target, goal, template.format(figure), "met" if meets(figure) else "not met")


def _rows(report: dict[str, Any] | None, op: str, shape: list[int]) -> dict[str, dict[str, Any]]:
    """The report's ok rows of `op` at `shape`, by backend."""
    return {
        row["backend"]: row
        for row in (report or {}).get("results", [])
        if row["op"] == op and list(row["shape"]) == shape and row["status"] == "ok"
    }


def _ratio(baseline: dict[str, Any] | None, fused: dict[str, Any] | None) -> float | None:
    """How many times faster `fused` ran than `baseline` (median times)."""
    if not baseline or not fused:
        return None
    return baseline["median_ms"] / fused["median_ms"]


def _read(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def print_table(results: list[Verdict]) -> None:
    width = max(len(result.target) for result in results)
    print(f"{'target':<{width}}  {'goal':<20}  {'measured':<14}  verdict")
    for row in results:
        print(f"{row.target:<{width}}  {row.goal:<20}  {row.measured:<14}  {row.status}")


def main(out: Path) -> None:
    results = verdicts(out)
    print_table(results)
    (out / "verdict.json").write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
