"""Recorded launches compiled ahead of time for real GPUs, and the resources their code uses.

Triton's wheel ships the CUDA back end (`ptxas`), so any machine with Triton compiles a kernel
for an A100 (`sm_80`) or an H100 (`sm_90`) without either card. For each `Launch` (see
`launches.py`) and target this module compiles the kernel as the GPU would at that launch, then
reads from the compiled code:

- registers per thread, spill bytes and stack frame, from `ptxas -v` on Triton's PTX (spills are
  the spill stores it reports; the stack frame also holds what libdevice's rarely taken slow
  paths reserve, which is not a spill);
- shared memory per program, from Triton's metadata;
- the bytes of global memory each thread loads and stores, from the PTX (one pass of each loop),
  and whether the kernel uses tensor cores (the GEMMs; every other kernel is memory-bound).

From those and the card's published per-SM limits it computes the theoretical occupancy and the
bytes each SM keeps in flight, and `budget_violations` says which of gentool's budgets a
compiled kernel breaks (see its docstring).

Compilation runs in worker processes with the environment's `TRITON_INTERPRET` removed, so that
the kernels load as they do on a GPU, whatever the calling process (a test under the interpreter,
say) loaded. `python -m gentool.kernels.compiled` is the worker: it reads jobs as JSON on stdin.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import io
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from gentool.kernels.launches import DTYPE_NAMES, Launch

MIN_OCCUPANCY = 0.25
LITTLES_LAW = "Little's law"  # what a kernel's docstring names when it runs below MIN_OCCUPANCY


@dataclass(frozen=True)
class Target:
    """A GPU's per-SM limits (CUDA C++ Programming Guide, compute capability table) and memory.

    `bandwidth` is the card's DRAM bandwidth and `latency` the time a load takes to return from
    DRAM; their product, spread over the SMs, is what each SM must keep in flight to reach the
    bandwidth (Little's law).
    """

    name: str
    card: str
    capability: int
    multiprocessors: int
    bandwidth: float  # bytes per second
    latency: float  # seconds
    shared_per_sm: int  # bytes, the largest carve-out
    shared_per_block: int  # bytes, the most one program may use (opt-in)
    registers_per_sm: int = 65536
    register_unit: int = 256  # a warp's registers are allocated in multiples of this
    max_warps_per_sm: int = 64
    max_blocks_per_sm: int = 32
    reserved_shared_per_block: int = 1024  # the system's share of each block's shared memory

    @property
    def bytes_in_flight_per_sm(self) -> float:
        return self.bandwidth * self.latency / self.multiprocessors


TARGETS = {
    "sm_80": Target(
        "sm_80",
        "A100 SXM4 80GB",
        80,
        multiprocessors=108,
        bandwidth=2.039e12,
        latency=600e-9,
        shared_per_sm=164 * 1024,
        shared_per_block=163 * 1024,
    ),
    "sm_90": Target(
        "sm_90",
        "H100 SXM5 80GB",
        90,
        multiprocessors=132,
        bandwidth=3.35e12,
        latency=600e-9,
        shared_per_sm=228 * 1024,
        shared_per_block=227 * 1024,
    ),
}


@dataclass(frozen=True)
class Resources:
    """What one compiled kernel uses, per thread unless named per program."""

    registers: int
    spill_bytes: int
    stack_bytes: int
    shared_bytes: int  # per program
    warps: int
    load_bytes: int
    store_bytes: int
    tensor_cores: bool
    explains_low_occupancy: bool  # its docstring gives the Little's-law computation


@dataclass(frozen=True)
class Compiled:
    """A launch compiled for a target: its resources, or the compiler's error."""

    launch: Launch
    target: str
    resources: Resources | None
    error: str | None
    seconds: float

    @property
    def occupancy(self) -> float | None:
        return None if self.resources is None else occupancy(self.resources, TARGETS[self.target])

    @property
    def bytes_in_flight_per_sm(self) -> float | None:
        if self.resources is None:
            return None
        threads = self.occupancy * TARGETS[self.target].max_warps_per_sm * 32
        return threads * self.resources.load_bytes

    @property
    def bytes_per_element(self) -> float | None:
        """Global bytes loaded and stored per element of the program's tile (the product of its
        BLOCK_* constexprs), for memory-bound kernels; None for the GEMMs."""
        if self.resources is None or self.resources.tensor_cores:
            return None
        tile = math.prod(
            value for name, value in self.launch.constexprs if name.startswith("BLOCK_")
        )
        per_thread = tile / (self.resources.warps * 32)
        moved = self.resources.load_bytes + self.resources.store_bytes
        return moved / per_thread if per_thread >= 1 else None

    def to_json(self) -> dict[str, Any]:
        return {
            "launch": self.launch.to_json(),
            "target": self.target,
            "resources": None if self.resources is None else asdict(self.resources),
            "error": self.error,
            "seconds": self.seconds,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Compiled:
        resources = data["resources"]
        return cls(
            launch=Launch.from_json(data["launch"]),
            target=data["target"],
            resources=None if resources is None else Resources(**resources),
            error=data["error"],
            seconds=data["seconds"],
        )


def occupancy(resources: Resources, target: Target) -> float:
    """Resident warps over the SM's maximum, as the CUDA occupancy calculator counts them."""
    warp_registers = _round_up(max(resources.registers, 1) * 32, target.register_unit)
    by_registers = (target.registers_per_sm // warp_registers) // resources.warps
    shared = resources.shared_bytes + target.reserved_shared_per_block
    by_shared = target.shared_per_sm // shared
    by_warps = target.max_warps_per_sm // resources.warps
    blocks = min(by_registers, by_shared, by_warps, target.max_blocks_per_sm)
    return blocks * resources.warps / target.max_warps_per_sm


def budget_violations(compiled: Compiled) -> list[str]:
    """The budgets a compiled launch breaks, each as a sentence with its numbers:

    - it compiles;
    - no spills;
    - shared memory within what one program may use on the target;
    - a memory-bound kernel (one without tensor cores) keeps at least the target's bandwidth ×
      latency per SM in flight at its theoretical occupancy;
    - occupancy at least MIN_OCCUPANCY, unless the kernel's docstring gives the Little's-law
      computation that shows its lower occupancy suffices.
    """
    if compiled.error is not None:
        lines = [line.strip() for line in compiled.error.splitlines() if line.strip()]
        # Triton's compilation errors give the location, the source, then the error itself.
        summary = lines[0] if len(lines) == 1 else f"{lines[0]} … {lines[-1]}"
        return [f"does not compile: {summary}"]
    resources, target = compiled.resources, TARGETS[compiled.target]
    assert resources is not None
    problems = []
    if resources.spill_bytes:
        problems.append(f"spills {resources.spill_bytes} bytes per thread")
    if resources.shared_bytes > target.shared_per_block:
        problems.append(
            f"needs {resources.shared_bytes} bytes of shared memory; the {target.card} gives one "
            f"program at most {target.shared_per_block}"
        )
    needed = target.bytes_in_flight_per_sm
    in_flight = compiled.bytes_in_flight_per_sm
    if not resources.tensor_cores and in_flight < needed:
        problems.append(
            f"keeps {in_flight / 1024:.1f} KiB in flight per SM at {compiled.occupancy:.0%} "
            f"occupancy; the {target.card} needs {needed / 1024:.1f} KiB"
        )
    if compiled.occupancy < MIN_OCCUPANCY and not resources.explains_low_occupancy:
        problems.append(
            f"runs at {compiled.occupancy:.0%} occupancy ({resources.registers} registers, "
            f"{resources.shared_bytes} bytes shared, {resources.warps} warps) without the "
            f"{LITTLES_LAW} computation in its docstring"
        )
    return problems


# --- compiling in worker processes ---------------------------------------------------------------


_compiled: dict[tuple[Launch, str], Compiled] = {}  # this process's results, each made once


def compile_launches(
    launches: Iterable[Launch], targets: Sequence[str], *, workers: int = 2
) -> list[Compiled]:
    """Every launch compiled for every target, in the order given.

    New compilations are spread over `workers` processes, each with an empty Triton cache of its
    own (so that every one runs ptxas and reports from it); results are kept for the rest of
    this process.
    """
    jobs = [(launch, target) for launch in launches for target in targets]
    missing = list(dict.fromkeys(job for job in jobs if job not in _compiled))
    if missing:
        with tempfile.TemporaryDirectory() as cache:
            for compiled in _run_workers(missing, workers, cache):
                _compiled[compiled.launch, compiled.target] = compiled
    return [_compiled[job] for job in jobs]


def _run_workers(jobs: list[tuple[Launch, str]], workers: int, cache: str) -> Iterator[Compiled]:
    environment = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    environment.update(TRITON_DUMP_PTXAS_LOG="1", TRITON_CACHE_DIR=cache)
    processes = []
    for index in range(min(workers, len(jobs))):
        share = Path(cache) / f"jobs-{index}.json"
        share.write_text(
            json.dumps([[launch.to_json(), target] for launch, target in jobs[index::workers]])
        )
        with share.open() as stdin:
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "gentool.kernels.compiled"],
                    stdin=stdin,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    env=environment,
                    text=True,
                )
            )
    for process in processes:
        output, errors = process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"a kernel compiler worker failed:\n{errors[-3000:]}")
        for line in output.splitlines():
            yield Compiled.from_json(json.loads(line))


def compile_launch(launch: Launch, target: str) -> Compiled:
    """One launch compiled for one target in this process (which must not be interpreting)."""
    started = time.perf_counter()
    try:
        resources = _compile(launch, TARGETS[target])
    except Exception as error:
        message = f"{type(error).__name__}: {error}".strip()
        return Compiled(launch, target, None, message, time.perf_counter() - started)
    return Compiled(launch, target, resources, None, time.perf_counter() - started)


def _compile(launch: Launch, target: Target) -> Resources:
    import triton
    from triton.backends.compiler import GPUTarget

    jit = getattr(importlib.import_module(launch.module), launch.kernel)
    while not hasattr(jit, "params"):  # a tuner (gentool's or Triton's) wraps the JIT function
        jit = jit.fn
    source = _ast_source(jit, launch, GPUTarget("cuda", target.capability, 32))
    printed = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(printed):
        warnings.simplefilter("ignore")  # Triton's notices about its own defaults
        compiled = triton.compile(
            source,
            target=GPUTarget("cuda", target.capability, 32),
            options=dict(launch.options),
        )
    ptx = compiled.asm["ptx"]
    # Triton prints its own ptxas -v log where it can (TRITON_DUMP_PTXAS_LOG, set for workers);
    # elsewhere ptxas runs again on the PTX.
    report = printed.getvalue()
    if not _USED.search(report):
        report = _ptxas_log(ptx, target.capability)
    registers, spills, stack = _resource_report(report)
    return Resources(
        registers=registers,
        spill_bytes=spills,
        stack_bytes=stack,
        shared_bytes=int(compiled.metadata.shared),
        warps=int(compiled.metadata.num_warps),
        load_bytes=_global_bytes(ptx, "ld"),
        store_bytes=_global_bytes(ptx, "st"),
        tensor_cores=bool(re.search(r"\b(w?gmma|mma)\.", ptx)),
        explains_low_occupancy=LITTLES_LAW in (inspect.getdoc(jit.fn) or ""),
    )


# --- the one place that knows how Triton's compile API changed ----------------------------------

_REPRESENTATIVE_INTEGERS = {"1": 1, "i32/16": 16, "i32": 17, "i64/16": 2**33, "i64": 2**33 + 1}


def _representative(kind: str) -> Any:
    """An argument that Triton specialises as `kind` (a `Launch` argument type)."""
    import torch

    if kind in _REPRESENTATIVE_INTEGERS:
        return _REPRESENTATIVE_INTEGERS[kind]
    if kind == "fp32":
        return 0.5
    if kind == "u1":
        return True
    if kind == "none":
        return None
    dtype_name = kind.removeprefix("*").removesuffix("/16")
    dtype = {name: dtype for dtype, name in DTYPE_NAMES.items()}[dtype_name]
    storage = torch.empty(2, dtype=dtype)
    return storage if kind.endswith("/16") else storage[1:]


def _ast_source(jit: Any, launch: Launch, target: Any) -> Any:
    """Triton's `ASTSource` for the launch: Triton 3.3 and newer take every argument's type (or
    "constexpr") with constexprs and attributes by argument; Triton 3.2 takes the runtime
    arguments' types, the constants (constexprs, integers equal to 1, None) and an
    AttrsDescriptor."""
    from triton.compiler import ASTSource, make_backend

    backend = make_backend(target)
    constexprs = dict(launch.constexprs)
    kinds = dict(launch.arguments)
    names = [parameter.name for parameter in jit.params]
    if "constexprs" in inspect.signature(ASTSource).parameters:
        signature, attrs = {}, {}
        for index, name in enumerate(names):
            kind = kinds.get(name)
            if kind is None or kind in ("1", "none"):
                signature[name] = "constexpr"
                constexprs.setdefault(name, _representative(kind) if kind else None)
            else:
                signature[name] = kind.removesuffix("/16")
                attrs[(index,)] = backend.parse_attr("D" if kind.endswith("/16") else "")
        return ASTSource(jit, signature, constexprs=constexprs, attrs=attrs)
    from triton.runtime.jit import mangle_type

    values = [
        constexprs[name] if name in constexprs else _representative(kinds[name]) for name in names
    ]
    signature = {
        name: mangle_type(value)
        for name, value in zip(names, values, strict=True)
        if name in kinds and value is not None
    }
    constants = {
        name: value
        for name, value in zip(names, values, strict=True)
        if name in constexprs or value is None or kinds.get(name) == "1"
    }
    attrs = backend.get_attrs_descriptor(jit.params, values)
    return ASTSource(jit, signature, constants, attrs)


def _ptxas(capability: int) -> str:
    from triton.backends.nvidia import compiler

    if not hasattr(compiler, "get_ptxas"):  # Triton 3.2
        return compiler._path_to_binary("ptxas")[0]
    takes_arch = bool(inspect.signature(compiler.get_ptxas).parameters)
    tool = compiler.get_ptxas(capability) if takes_arch else compiler.get_ptxas()
    return tool[0] if isinstance(tool, tuple) else getattr(tool, "path", tool)


# --- reading the compiled code -------------------------------------------------------------------

_USED = re.compile(r"Used (\d+) registers")
_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_ASYNC_COPY = re.compile(
    r"^\s*(?:@!?%p\d+\s+)?cp\.async\.c[ag]\.shared\.global\S*\s+\[[^\]]*\],\s*\[[^\]]*\],"
    r"\s*(0x[0-9a-fA-F]+|\d+)",
    re.M,
)
_GLOBAL_ACCESS = re.compile(
    r"^\s*(?:@!?%p\d+\s+)?(ld|st)\.global\S*?(?:\.v(\d))?\.[bfsu](\d+)\s", re.M
)


def _ptxas_log(ptx: str, capability: int) -> str:
    """What `ptxas -v` says about the PTX."""
    gpu = f"sm_{capability}{'a' if capability >= 90 else ''}"
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "kernel.ptx"
        source.write_text(ptx)
        result = subprocess.run(
            [_ptxas(capability), "-v", f"--gpu-name={gpu}", str(source), "-o", f"{folder}/k.o"],
            capture_output=True,
            text=True,
            check=True,
        )
    return result.stderr + result.stdout


def _resource_report(report: str) -> tuple[int, int, int]:
    """(registers, spill store bytes, stack frame bytes) from a `ptxas -v` log."""
    registers = _USED.search(report)
    frame = _FRAME.search(report)
    if registers is None or frame is None:
        raise RuntimeError(f"ptxas -v gave no resource report:\n{report}")
    return int(registers.group(1)), int(frame.group(2)), int(frame.group(1))


def _global_bytes(ptx: str, kind: str) -> int:
    """Bytes of the PTX's global loads (`ld`, with asynchronous copies to shared memory) or
    stores (`st`) per thread, each instruction counted once."""
    total = 0
    for access, vector, bits in _GLOBAL_ACCESS.findall(ptx):
        if access == kind:
            total += int(vector or 1) * int(bits) // 8
    if kind == "ld":  # copies from global to shared memory, which pipelined loops issue
        total += sum(int(size, 0) for size in _ASYNC_COPY.findall(ptx))
    return total


def _round_up(value: int, unit: int) -> int:
    return -(-value // unit) * unit


def _main() -> None:
    for launch_json, target in json.loads(sys.stdin.read()):
        compiled = compile_launch(Launch.from_json(launch_json), target)
        print(json.dumps(compiled.to_json()), flush=True)


if __name__ == "__main__":
    _main()
