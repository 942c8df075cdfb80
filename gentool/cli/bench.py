"""`gentool bench kernels` and `gentool bench train`: fused ops checked and timed, and
training steps timed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from gentool.cli.app import bench_app, choice, console, error_console, shown_number, user_errors
from gentool.cli.options import DeviceOption, ModelOverridesOption
from gentool.errors import GentoolError
from gentool.registry import resolve
from gentool.terminal import escaped

if TYPE_CHECKING:
    import torch

OpOption = Annotated[
    str | None, typer.Option("--op", help="One op (default: all): reparam_kl, convt_bn_relu")
]
SizesOption = Annotated[str, typer.Option("--sizes", help="small, dcgan (model sizes) or large")]
BackendsOption = Annotated[
    str, typer.Option("--backends", help="Comma-separated backends to compare")
]
DtypeOption = Annotated[str, typer.Option("--dtype", help="float32 or bfloat16")]
JsonPathOption = Annotated[Path | None, typer.Option("--json", help="Also write the numbers here")]
StaticOption = Annotated[
    bool,
    typer.Option(
        "--static", help="Compile every Triton launch for real GPUs instead (no GPU needed)"
    ),
]
TargetOption = Annotated[
    str | None,
    typer.Option("--target", help="With --static: sm_80 (A100) or sm_90 (H100); default both"),
]


@bench_app.command("kernels")
@user_errors
def bench_kernels(
    op: OpOption = None,
    sizes: SizesOption = "dcgan",
    backends: BackendsOption = "eager,compile,torch,triton,triton-gemm",
    dtype: DtypeOption = "float32",
    device: DeviceOption = "auto",
    json_path: JsonPathOption = None,
    static: StaticOption = False,
    target: TargetOption = None,
) -> None:
    """Check each fused op against a float64 reference, then time it on each backend.

    Backends: eager (the unfused PyTorch composition), compile (it under torch.compile), torch
    (the op's PyTorch implementation), triton (its kernels; CUDA only), triton-gemm
    (convt_bn_relu with Triton's convolution too). A wrong result is shown in red and makes the
    exit status 1. --static compiles every Triton launch of training and of these benchmarks
    for an A100 and an H100 and shows each kernel's registers, spills, shared memory and
    occupancy; a compile error or a broken budget makes the exit status 1.

    [dim]Examples: gentool bench kernels --sizes large --json bench.json
              gentool bench kernels --static --target sm_90[/]
    """
    if static:
        from gentool.kernel_report import static_command

        static_command(target, json_path, console, error_console)
        return
    import torch
    from rich.progress import Progress

    from gentool.bench import OPS, cases, device_copy_ceiling, run_op
    from gentool.devices import resolve_device

    ops = [choice("--op", op, OPS)] if op else list(OPS.values())
    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16}
    chosen_dtype = choice("--dtype", dtype, dtypes)
    chosen_backends = [name.strip() for name in backends.split(",") if name.strip()]
    for operation in ops:
        choice("--sizes", sizes, operation.sizes)
    target = resolve_device(device)
    ceiling = device_copy_ceiling(target)
    results = []
    total = sum(cases(operation, sizes, chosen_backends) for operation in ops)
    with Progress(console=error_console, transient=True) as progress:
        task = progress.add_task("benchmarking", total=total)
        for operation in ops:
            results += run_op(
                operation, sizes=sizes, backends=chosen_backends, dtype=chosen_dtype,
                device=target, ceiling_gbps=ceiling, on_result=lambda _: progress.advance(task),
            )  # fmt: skip
    _say_kernel_results(ops, results, target, dtype, ceiling, json_path)


def _say_kernel_results(
    ops: list,
    results: list,
    target: torch.device,
    dtype: str,
    ceiling: float,
    json_path: Path | None,
) -> None:
    """A table per op, the JSON when asked, and exit status 1 when a backend is wrong."""
    import torch

    from gentool.atomic import write_text
    from gentool.bench import results_to_json

    device_name = torch.cuda.get_device_name(target) if target.type == "cuda" else "cpu"
    for operation in ops:
        title = f"{operation.name} · {escaped(device_name)} · {dtype} · copy {ceiling:.0f} GB/s"
        rows = [result for result in results if result.op == operation.name]
        console.print(_kernel_table(title, rows, flops=operation.flops is not None))
    if json_path is not None:
        report = results_to_json(results, device=device_name, ceiling_gbps=ceiling)
        write_text(json_path, json.dumps(report, indent=2) + "\n")
    failed = [result for result in results if result.status == "failed"]
    if failed:
        names = ", ".join(f"{result.op}/{result.backend}" for result in failed)
        raise GentoolError(f"{len(failed)} results disagree with the reference: {names}")


@bench_app.command("train")
@user_errors
def bench_train(
    name: str = typer.Argument(..., help="Model to time."),
    overrides: ModelOverridesOption = [],  # noqa: B006 - Typer's declaration, never mutated
    batch_size: int | None = typer.Option(
        None, "--batch-size", "-b", min=1, help="Images per step (default: the model's)"
    ),
    steps: int = typer.Option(5, "--steps", min=1, help="Timed steps per variant, after warm-up"),
    variants: str = typer.Option(
        "eager,compile,fused",
        "--variants",
        help="Comma-separated: eager, compile, fused, channels-last, compile+channels-last, "
        "amp, amp+channels-last",
    ),
    device: DeviceOption = "auto",
) -> None:
    """Images per second of full training steps: eager, torch.compile, the fused kernels,
    channels-last and mixed precision (--amp). Under torchrun, each process steps on its share
    of the batch.

    [dim]Examples:
      gentool bench train dcgan --steps 10
      torchrun --nproc-per-node 2 -m gentool bench train dcgan --variants eager[/]
    """
    import torch

    from gentool.config import parse_assignment
    from gentool.devices import resolve_device
    from gentool.training.benchmark import TRAIN_VARIANTS, bench_training
    from gentool.training.distributed import process_group, ranks_from_environment

    entry = resolve(name)
    config = entry.plugin.parse_config(dict(map(parse_assignment, overrides)))
    chosen = [variant.strip() for variant in variants.split(",")]
    if "" in chosen or len(set(chosen)) < len(chosen):
        raise GentoolError(
            f"--variants takes distinct names between commas, got {variants!r}: "
            f"any of {', '.join(TRAIN_VARIANTS)}"
        )
    for variant in chosen:
        choice("--variants", variant, dict.fromkeys(TRAIN_VARIANTS))
    target = resolve_device(device)
    batch = batch_size or entry.plugin.default_batch_size
    ranks = ranks_from_environment()
    with (
        process_group(ranks, target) as target,
        error_console.status(f"timing {escaped(entry.name)} training steps"),
    ):
        results = bench_training(
            entry.plugin, config, batch_size=batch, device=target, variants=chosen,
            steps=steps, ranks=ranks,
        )  # fmt: skip
    if not ranks.main:
        return
    device_name = torch.cuda.get_device_name(target) if target.type == "cuda" else "cpu"
    if ranks.distributed:
        device_name += f" × {ranks.world_size} processes"
    title = escaped(f"{entry.name} · batch {batch} · {device_name}")
    console.print(_training_table(title, results))


def _kernel_table(title: str, results: list, *, flops: bool) -> Table:
    """One op's results: correctness first, then its speed."""
    verdicts = {"ok": "[green]yes[/]", "failed": "[red]FAILED[/]", "skipped": "[dim]skipped[/]"}
    table = Table(title=title)
    columns = ["shape", "backend", "correct", "ms", "GB/s", "%copy"]
    columns += ["TFLOP/s"] if flops else []
    for column in [*columns, "×eager", "peak MB"]:
        table.add_column(column, no_wrap=True)
    table.add_column("note", overflow="fold")
    for result in results:
        error = "" if result.max_error is None else f" {result.max_error:.0e}"
        note = escaped(result.reason)
        table.add_row(
            "×".join(map(str, result.shape)),
            result.backend,
            verdicts[result.status] + error,
            shown_number(result.median_ms, "{:.3f}"),
            shown_number(result.gbps, "{:.1f}"),
            shown_number(result.ceiling_percent, "{:.0f}"),
            *([shown_number(result.tflops, "{:.2f}")] if flops else []),
            shown_number(result.speedup, "{:.2f}"),
            shown_number(result.peak_mb, "{:.0f}"),
            f"[red]{note}[/]" if result.status == "failed" else note,
        )
    return table


def _training_table(title: str, results: list) -> Table:
    table = Table("variant", "images/s", "step", "vs eager", "peak", "note", title=title)
    for result in results:
        table.add_row(
            result.variant,
            shown_number(result.images_per_second, "{:.1f}"),
            shown_number(result.step_ms, "{:.1f} ms"),
            shown_number(result.speedup, "{:.2f}×"),
            shown_number(result.peak_mb, "{:.0f} MB"),
            f"[dim]skipped: {escaped(result.reason)}[/]" if result.status == "skipped" else "",
        )
    return table
