"""`gentool bench kernels --static`: every Triton launch of training and benchmarking, compiled for
real GPUs on this machine, with the resources each uses.

The launches are recorded, not listed (see `gentool.kernels.launches`): one training step of every
built-in model at its default config and batch size, in float32 and, for the models that launch
Triton kernels, under bfloat16 autocast (`--amp`), each followed by the eval-mode sampling and
reconstruction that training does each epoch; and one forward and backward pass of each
`gentool bench kernels` size of each op's Triton backends, in float32 and bfloat16. Launches are
recorded and not run, and the work runs on the meta device where it can: shapes and dtypes only,
no arithmetic, so that large sizes take no time. A model whose step looks at its values (a check
of its labels, say), which the meta device does not have, and the `--amp` steps (autocast has no
meta device) run on the CPU instead; the kernels' outputs are then left unwritten, which only
the values see. Models that launch no Triton kernel record nothing, so a new model that uses a
fused op is covered without a word here.

This module is the workload and the report; compiling and reading the cubins is
`gentool.kernels.compiled`; the CLI calls `static_command`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from gentool.api import Batch, DataSpec, ModelPlugin
from gentool.errors import GentoolError
from gentool.kernels.compiled import TARGETS, Compiled, budget_violations, compile_launches
from gentool.kernels.dispatch import use_backend
from gentool.kernels.launches import LaunchLog, LaunchUses, record_launches

REPORT_WIDTH = 170
STATIC_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
META = torch.device("meta")


def record_workload(progress: Callable[[str], None] = lambda label: None) -> LaunchLog:
    """The launches of the training and benchmark workload described in the module docstring."""
    from gentool.bench import OPS
    from gentool.registry import BUILT_IN_DISTRIBUTION, discover

    plugins = [
        entry.plugin
        for entry in discover()
        if entry.distribution == BUILT_IN_DISTRIBUTION and entry.plugin is not None
    ]
    with record_launches() as log, use_backend("triton"):
        for plugin in plugins:
            label = f"train {plugin.name}"
            progress(label)
            recorded = len(log.uses)
            with log.source(label):
                _train_and_sample(plugin, amp=False)
            if len(log.uses) > recorded:  # it uses a fused op: --amp runs its kernels in bfloat16
                progress(f"{label} --amp")
                with log.source(f"{label} --amp"):
                    _train_and_sample(plugin, amp=True)
        for op in OPS.values():
            for sizes, shapes in op.sizes.items():
                for dtype_name, dtype in STATIC_DTYPES.items():
                    label = f"bench {op.name} --sizes {sizes} --dtype {dtype_name}"
                    progress(label)
                    with log.source(label):
                        for shape, backend in ((s, b) for s in shapes for b in op.triton_backends):
                            inputs = op.make_inputs(shape, dtype, META)
                            outputs = op.backends[backend](inputs, None)
                            torch.autograd.backward(outputs, [torch.ones_like(o) for o in outputs])
    return log


def _train_and_sample(plugin: ModelPlugin, *, amp: bool) -> None:
    """One training step at the plugin's defaults, then what each epoch's end runs in eval mode:
    on the meta device, or on the CPU for `amp` (autocast has no meta device) and for a model
    whose step looks at values, which the meta device does not have."""
    if not amp:
        try:
            _step_and_sample(plugin, META, amp=False)
            return
        except (NotImplementedError, RuntimeError):
            pass  # what the meta device says of an operation that needs values
    _step_and_sample(plugin, torch.device("cpu"), amp=amp)


def _step_and_sample(plugin: ModelPlugin, device: torch.device, *, amp: bool) -> None:
    """One training step as the trainer takes it, then the epoch's eval-mode sampling."""
    from gentool.models import build_model, image_size_of
    from gentool.sampling import evaluating
    from gentool.training.benchmark import BENCH_IMAGE_SIZE
    from gentool.training.loop import SAMPLE_GRID_SIZE
    from gentool.training.speed import mixed_precision
    from gentool.training.step import StepContext, optimizers_of, phases_of, train_step

    config = plugin.parse_config({})
    size = image_size_of(config) or BENCH_IMAGE_SIZE
    classes = tuple(f"class {i}" for i in range(10)) if plugin.capabilities.conditional else ()
    spec = DataSpec(channels=3, height=size, width=size, class_names=classes)
    batch_size = plugin.default_batch_size
    low, high = plugin.value_range
    images = low + (high - low) * torch.rand(batch_size, 3, size, size, device=device)
    batch = Batch(images=images, labels=_labels(batch_size, classes, device))
    torch.manual_seed(0)
    model = build_model(plugin, config, spec, device)
    context = StepContext(optimizers_of(model, plugin), device)
    phases = phases_of(model, plugin)
    context.enter_phase(phases[0] if phases else None)
    autocast, _ = mixed_precision(device, amp)
    with autocast:
        train_step(model, batch, context, plugin)
        with evaluating(model):
            if plugin.capabilities.sample:
                model.sample(SAMPLE_GRID_SIZE, labels=_labels(SAMPLE_GRID_SIZE, classes, device))
            if plugin.capabilities.reconstruct:
                model.reconstruct(images)


def _labels(count: int, classes: tuple[str, ...], device: torch.device) -> torch.Tensor | None:
    return torch.arange(count, device=device) % len(classes) if classes else None


# --- the report ----------------------------------------------------------------------------------


@dataclass
class StaticRow:
    """One compiled launch on one target, with where it is used and the budgets it breaks."""

    compiled: Compiled
    uses: LaunchUses
    violations: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        compiled = self.compiled
        return {
            **compiled.to_json(),
            "card": TARGETS[compiled.target].card,
            "config": compiled.launch.config,
            "pointer_dtypes": compiled.launch.pointer_dtypes,
            "occupancy": compiled.occupancy,
            "bytes_in_flight_per_sm": compiled.bytes_in_flight_per_sm,
            "bytes_needed_in_flight_per_sm": TARGETS[compiled.target].bytes_in_flight_per_sm,
            "bytes_per_element": compiled.bytes_per_element,
            "programs": sorted(self.uses.programs),
            "sources": sorted(self.uses.sources),
            "violations": self.violations,
        }


def static_report(
    targets: list[str], *, workers: int = 2, progress: Callable[[str], None] = lambda label: None
) -> list[StaticRow]:
    """Every recorded launch compiled for each target, with its budget violations."""
    log = record_workload(progress)
    progress(f"compiling {len(log.uses)} launches for {', '.join(targets)}")
    compiled = compile_launches(log.launches, targets, workers=workers)
    return [
        StaticRow(result, log.uses[result.launch], budget_violations(result)) for result in compiled
    ]


def static_json(rows: list[StaticRow]) -> dict[str, Any]:
    import triton

    return {
        "triton": triton.__version__,
        "torch": torch.__version__,
        "targets": {
            name: {
                "card": target.card,
                "bytes_needed_in_flight_per_sm": target.bytes_in_flight_per_sm,
            }
            for name, target in TARGETS.items()
            if any(row.compiled.target == name for row in rows)
        },
        "launches": [row.to_json() for row in rows],
    }


def print_static_table(rows: list[StaticRow], console: Any) -> None:
    """One Rich table per target: kernel, pointer dtypes, config, registers, spill bytes, shared
    memory, occupancy, bytes in flight per SM, bytes moved per element, programs, budgets."""
    from rich.segment import Segments
    from rich.table import Table

    options = console.options
    if not console.is_terminal:  # to a file or pipe: the width the table needs, not 80 columns
        options = options.update_width(REPORT_WIDTH)
    for target in dict.fromkeys(row.compiled.target for row in rows):
        card = TARGETS[target]
        table = Table(
            title=f"{target} ({card.card}) · needs {card.bytes_in_flight_per_sm / 1024:.1f} KiB "
            "in flight per SM"
        )
        table.add_column("kernel", no_wrap=True)
        table.add_column("dtypes", no_wrap=True)
        table.add_column("config", overflow="fold", min_width=24)
        for column in ("regs", "spills", "shared", "occupancy", "in flight", "B/elem"):
            table.add_column(column, no_wrap=True, justify="right")
        table.add_column("programs", overflow="fold")
        table.add_column("budgets", overflow="fold")
        for row in (row for row in rows if row.compiled.target == target):
            table.add_row(*_cells(row))
        # Drawn at that width, then printed by the command's own console, which drops what its
        # stream refuses (a second console would raise on a closed pipe).
        lines = console.render_lines(table, options, pad=False, new_lines=True)
        console.print(Segments(segment for line in lines for segment in line), crop=False)


def _cells(row: StaticRow) -> list[str]:
    from rich.markup import escape

    compiled, resources, launch = row.compiled, row.compiled.resources, row.compiled.launch
    broken = escape("; ".join(row.violations))
    verdict = f"[red]{broken}[/]" if row.violations else "[green]ok[/]"
    name = launch.kernel.lstrip("_")
    if resources is None:
        return [name, launch.pointer_dtypes, launch.config, *["–"] * 7, verdict]
    per_element = compiled.bytes_per_element
    programs = row.uses.programs
    return [
        name,
        launch.pointer_dtypes,
        launch.config,
        str(resources.registers),
        f"{resources.spill_bytes} B",
        f"{resources.shared_bytes / 1024:.1f} KiB",
        f"{compiled.occupancy:.0%}",
        "GEMM" if resources.tensor_cores else f"{compiled.bytes_in_flight_per_sm / 1024:.0f} KiB",
        "–" if per_element is None else f"{per_element:.1f}",
        f"{min(programs)}" if len(programs) == 1 else f"{min(programs)}–{max(programs)}",
        verdict,
    ]


def static_command(
    target: str | None, json_path: Path | None, console: Any, error_console: Any
) -> None:
    """`gentool bench kernels --static`: the report as tables, and as JSON at `json_path`; a
    GentoolError names the launches that fail to compile or break a budget."""
    from gentool.atomic import write_text
    from gentool.kernels.dispatch import triton_import_error

    if target is not None and target not in TARGETS:
        raise GentoolError(f"--target must be one of {', '.join(TARGETS)}; got {target!r}")
    if (reason := triton_import_error()) is not None:
        raise GentoolError(f"--static compiles Triton kernels, and {reason}")
    targets = [target] if target else list(TARGETS)
    with error_console.status("recording launches") as status:
        rows = static_report(targets, progress=lambda label: status.update(label))
    print_static_table(rows, console)
    if json_path is not None:
        write_text(json_path, json.dumps(static_json(rows), indent=2) + "\n")
    broken = [row for row in rows if row.violations]
    if broken:
        names = ", ".join(
            sorted({f"{row.compiled.launch.kernel} on {row.compiled.target}" for row in broken})
        )
        raise GentoolError(f"{len(broken)} compiled launches break a budget: {names}")
