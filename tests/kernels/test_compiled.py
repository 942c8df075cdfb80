"""Every Triton launch of training and benchmarking, compiled for an A100 (sm_80) and an H100
(sm_90) with the ptxas of Triton's wheel, against gentool's budgets (no GPU needed).

The workload is recorded once per session (`gentool.kernel_report.record_workload`) and compiled
in two worker processes; `gentool bench kernels --static` shows the same rows. Further tests
prove that each budget fails when it should: a kernel reading a module-level int (the
interpreter runs it, no GPU compiler does), a tile that spills, and a GEMM config whose shared
memory no card has.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

pytest.importorskip("triton", reason="compiling for GPUs needs Triton")

from gentool.kernel_report import StaticRow
from gentool.kernels import launches
from gentool.kernels.compiled import (
    TARGETS,
    Resources,
    budget_violations,
    compile_launches,
    occupancy,
)
from gentool.kernels.launches import Launch, launch, record_launches
from tests.kernels import faulty_kernels

KERNEL_MODULES = (
    "triton_reparam_kl",
    "triton_batch_norm",
    "triton_batch_norm_backward",
    "triton_convt_gemm",
)


def describe(row: StaticRow) -> str:
    launch, target = row.compiled.launch, row.compiled.target
    return f"{launch.kernel} [{launch.config}] on {target}: {'; '.join(row.violations)}"


def test_every_recorded_launch_compiles_for_each_target(static_rows):
    failures = [describe(row) for row in static_rows if row.compiled.error is not None]
    assert not failures, "\n".join(failures)
    assert {row.compiled.target for row in static_rows} == set(TARGETS)


def test_every_compiled_launch_meets_the_budgets(static_rows):
    broken = [describe(row) for row in static_rows if row.violations]
    assert not broken, "\n".join(broken)


def test_the_workload_launches_every_kernel_gentool_has(static_rows):
    import importlib

    defined = set()
    for name in KERNEL_MODULES:
        module = importlib.import_module(f"gentool.kernels.{name}")
        for attribute, value in vars(module).items():
            if hasattr(value, "fn") and not attribute.startswith("__"):
                defined.add(attribute)
    # called by kernels, never launched
    helpers = {"chunk_tile", "tile_offsets", "_normalisation_rows", "_y_and_relu_grad", "_pick"}
    recorded = {row.compiled.launch.kernel for row in static_rows}
    assert recorded == defined - helpers


def test_training_of_every_model_with_a_fused_op_is_recorded(static_rows):
    sources = set().union(*(row.uses.sources for row in static_rows))
    for model in ("dcgan", "vae", "conv-ae"):
        assert {f"train {model}", f"train {model} --amp"} <= sources
    assert not any(source.startswith("train gan") for source in sources)  # no fused op


def test_autotuned_launches_stand_for_every_config_of_the_full_list():
    from gentool.kernels.triton_convt_gemm import GEMM_CONFIGS

    log = record_workload_of_one_gemm()
    configs = {(launch.options, launch.constexprs[-2:]) for launch in log.launches}
    assert len(configs) == len(GEMM_CONFIGS)


def record_workload_of_one_gemm():
    from gentool.kernels import triton_convt_gemm

    with record_launches() as log:
        triton_convt_gemm.conv_transpose(
            torch.empty(2, 8, 4, 4, device="meta"), torch.empty(8, 4, 4, 4, device="meta"), 2, 1
        )
    return log


def compile_one(launch_record: Launch, target: str = "sm_90"):
    (compiled,) = compile_launches([launch_record], [target], workers=1)
    return compiled, budget_violations(compiled)


def test_a_module_level_int_read_in_a_kernel_fails_to_compile_with_the_compilers_message():
    with record_launches() as log:
        launch(
            faulty_kernels._reads_a_module_level_int, (1,), torch.empty(16, device="meta"), BLOCK=16
        )
    compiled, violations = compile_one(log.launches[0])
    assert compiled.error is not None
    assert "Cannot access global variable SCALE" in compiled.error
    (violation,) = violations
    assert violation.startswith("does not compile: CompilationError: at ")
    assert 'NameError("Cannot access global variable SCALE from within' in violation


def reparam_forward_launch() -> Launch:
    from gentool.kernels import triton_reparam_kl

    mu = torch.empty(64, 4096, device="meta")
    with record_launches() as log:
        triton_reparam_kl.forward(mu, mu, None, seed=3)
    return log.launches[0]


def test_a_tile_that_spills_breaks_the_budget():
    recorded = reparam_forward_launch()
    constexprs = dict(recorded.constexprs) | {"BLOCK_ROWS": 1, "BLOCK_COLS": 4096}
    spilling = replace(
        recorded,
        constexprs=tuple(constexprs.items()),
        options=(("num_warps", 1), ("num_stages", 3)),
    )
    compiled, violations = compile_one(spilling)
    assert compiled.resources.spill_bytes > 0
    assert f"spills {compiled.resources.spill_bytes} bytes per thread" in violations


def test_a_gemm_config_with_more_shared_memory_than_the_card_breaks_the_budget():
    gemm = record_workload_of_one_gemm().launches[0]
    constexprs = dict(gemm.constexprs) | {"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 64}
    options = (("num_warps", 4), ("num_stages", 8))  # 8 stages of 64×64 tiles: 256 KiB
    huge = replace(gemm, constexprs=tuple(constexprs.items()), options=options)
    compiled, violations = compile_one(huge)
    shared = compiled.resources.shared_bytes
    assert shared > TARGETS["sm_90"].shared_per_block
    assert (
        f"needs {shared} bytes of shared memory; the H100 SXM5 80GB gives one program at most "
        f"{227 * 1024}" in violations
    )


def test_occupancy_follows_the_cuda_occupancy_calculator():
    def resources(registers, shared, warps):
        return Resources(registers, 0, 0, shared, warps, 64, 64, False, False)

    h100 = TARGETS["sm_90"]
    assert occupancy(resources(32, 0, 4), h100) == 1.0  # 16 blocks of 4 warps: all 64 warps
    assert occupancy(resources(64, 0, 4), h100) == 0.5  # 2048 registers a warp: 32 warps
    assert occupancy(resources(255, 0, 4), h100) == 0.125  # 8192 a warp: 8 warps, 2 blocks
    # 100 KiB + 1 KiB reserved per block: two blocks in 228 KiB.
    assert occupancy(resources(32, 100 * 1024, 8), h100) == 0.25
    assert occupancy(resources(32, 100 * 1024, 8), TARGETS["sm_80"]) == 0.125


def test_a_memory_bound_kernel_with_too_few_bytes_in_flight_breaks_the_budget():
    recorded = reparam_forward_launch()
    starved = Resources(32, 0, 0, 0, 4, 4, 4, False, False)  # 4 bytes a thread in flight
    from gentool.kernels.compiled import Compiled

    violations = budget_violations(Compiled(recorded, "sm_90", starved, None, 0.0))
    assert violations == [
        "keeps 8.0 KiB in flight per SM at 100% occupancy; the H100 SXM5 80GB needs 14.9 KiB"
    ]


def test_recording_specialises_arguments_as_triton_does():
    tensor = torch.empty(8)
    assert launches.specialisation(tensor) == "*fp32/16"
    assert launches.specialisation(tensor[1:]) == "*fp32"
    assert [launches.specialisation(value) for value in (1, 16, 17, 2**33, 0.5)] == [
        "1",
        "i32/16",
        "i32",
        "i64/16",
        "fp32",
    ]
    assert launches.specialisation(16, specialise=False) == "i32"
