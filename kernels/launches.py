"""Every Triton launch of gentool goes through `launch`, so that launches can be recorded.

`record_launches()` is how the kernels are checked ahead of time for GPUs this machine does not
have: while it is active, `launch` records each call as a `Launch` instead of running it, and
`dispatch` lets the Triton backend take tensors on any device (nothing executes, so the CPU will
do). Running a model's training step, or a benchmark, inside it therefore yields exactly the
launches that code makes, at its real shapes and dtypes, in seconds and without a GPU: the
kernels' outputs are left unwritten (whatever `torch.empty` gave), so recording is for shapes and
types, never for values.

A `Launch` holds what Triton specialises a compiled kernel on, in Triton's own notation: each
argument's type (`*fp32` a pointer, `i32`, `fp32`, ...), with `/16` where a pointer or integer is a
multiple of 16 bytes or 16, `1` where an integer is 1 (compiled in as a constant); the constexpr
values; and the launch options. Two calls with the same specialisation compile to the same code,
so each is kept once, with the programs its grids started and the work it came from.

An autotuned kernel is declared with `autotune`, which keeps its full config list even under
Triton's interpreter (which tunes over the first config only, as it would run and time every
one): a recorded autotuned launch stands for one compilation per config of that full list.
"""

from __future__ import annotations

import inspect
import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import torch

OPTION_NAMES = ("num_warps", "num_stages")
DEFAULTS = (("num_warps", 4), ("num_stages", 3))  # Triton's, for a launch that does not say
DTYPE_NAMES = {
    torch.float32: "fp32",
    torch.float16: "fp16",
    torch.bfloat16: "bf16",
    torch.float64: "fp64",
    torch.int64: "i64",
    torch.int32: "i32",
    torch.int8: "i8",
    torch.uint8: "u8",
    torch.bool: "i1",
}


@dataclass(frozen=True)
class Launch:
    """One compilation: a kernel, its argument specialisation, constexprs and options."""

    module: str
    kernel: str
    arguments: tuple[tuple[str, str], ...]  # (name, Triton type) of each runtime argument
    constexprs: tuple[tuple[str, Any], ...]
    options: tuple[tuple[str, int], ...]  # num_warps, num_stages

    @property
    def pointer_dtypes(self) -> str:
        """The element types of its pointer arguments, as `bf16,fp32`."""
        kinds = {kind[1:].removesuffix("/16") for _, kind in self.arguments if kind[0] == "*"}
        return ",".join(sorted(kinds))

    @property
    def config(self) -> str:
        """The constexprs and options, as a reader looks for them: `BLOCK=1024 warps=4 ...`."""
        values = [f"{name}={value}" for name, value in self.constexprs]
        options = dict(self.options)
        values += [f"warps={options['num_warps']}", f"stages={options['num_stages']}"]
        return " ".join(values)

    def to_json(self) -> dict[str, Any]:
        return {
            "module": self.module,
            "kernel": self.kernel,
            "arguments": [list(pair) for pair in self.arguments],
            "constexprs": [list(pair) for pair in self.constexprs],
            "options": [list(pair) for pair in self.options],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Launch:
        return cls(
            module=data["module"],
            kernel=data["kernel"],
            arguments=tuple((name, kind) for name, kind in data["arguments"]),
            constexprs=tuple((name, value) for name, value in data["constexprs"]),
            options=tuple((name, value) for name, value in data["options"]),
        )


@dataclass
class LaunchUses:
    """Where a compiled launch is used: the work that made it and the programs of its grids."""

    sources: set[str] = field(default_factory=set)
    programs: set[int] = field(default_factory=set)


class LaunchLog:
    """The launches recorded by `record_launches`, each once, in the order first seen."""

    def __init__(self) -> None:
        self.uses: dict[Launch, LaunchUses] = {}
        self._source = "unlabelled"

    @property
    def launches(self) -> list[Launch]:
        return list(self.uses)

    @contextmanager
    def source(self, label: str) -> Iterator[None]:
        """Label the launches recorded in the block (`train dcgan`, `bench reparam_kl large`)."""
        previous, self._source = self._source, label
        try:
            yield
        finally:
            self._source = previous

    def add(self, launch: Launch, programs: int) -> None:
        uses = self.uses.setdefault(launch, LaunchUses())
        uses.sources.add(self._source)
        uses.programs.add(programs)


_recording: ContextVar[LaunchLog | None] = ContextVar("gentool_launch_log", default=None)


@contextmanager
def record_launches() -> Iterator[LaunchLog]:
    """Record, instead of running, every `launch` made in the block (see the module docstring)."""
    log = LaunchLog()
    token = _recording.set(log)
    try:
        yield log
    finally:
        _recording.reset(token)


def interpreter_enabled() -> bool:
    """Whether Triton runs kernels on the CPU through its interpreter (read at decoration)."""
    return os.environ.get("TRITON_INTERPRET") == "1"


def recording() -> bool:
    return _recording.get() is not None


def autotune(configs: Sequence[Any], key: list[str]) -> Callable[[Any], Autotuned]:
    """Declare a kernel that `triton.autotune` tunes over `configs` (see `Autotuned`)."""
    return lambda kernel: Autotuned(kernel, list(configs), key)


class Autotuned:
    """A JIT kernel tuned over `all_configs` by `triton.autotune`, made at its first launch (the
    tuner of Triton 3.2 needs a GPU driver when it is made, so it cannot be made on import).
    Under the interpreter the tuner takes the first config only: it would run and time each."""

    def __init__(self, fn: Any, all_configs: list[Any], key: list[str]) -> None:
        self.fn = fn
        self.all_configs = all_configs
        self.key = key
        self._tuned: Any = None

    def __getitem__(self, grid: Any) -> Callable[..., Any]:
        if self._tuned is None:
            import triton

            tried = self.all_configs[:1] if interpreter_enabled() else self.all_configs
            self._tuned = triton.autotune(configs=tried, key=self.key)(self.fn)
        return self._tuned[grid]


def launch(kernel: Any, grid: Any, *args: Any, **kwargs: Any) -> None:
    """`kernel[grid](*args, **kwargs)`, or, while recording, its record."""
    log = _recording.get()
    if log is None:
        kernel[grid](*args, **kwargs)
    else:
        _record(log, kernel, grid, args, kwargs)


def _record(
    log: LaunchLog, kernel: Any, grid: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    function = _python_function(kernel)
    options = {name: kwargs.pop(name) for name in OPTION_NAMES if name in kwargs}
    bound = inspect.signature(function).bind_partial(*args, **kwargs).arguments
    unspecialised = _unspecialised(kernel, function)
    arguments, constexprs = [], []
    for name, value in bound.items():
        if _is_constexpr(function, name):
            constexprs.append((name, getattr(value, "value", value)))  # a tl.constexpr's value
        else:
            arguments.append((name, specialisation(value, specialise=name not in unspecialised)))
    name, module = function.__name__, function.__module__
    if not isinstance(kernel, Autotuned):
        chosen = tuple((option, options.get(option, default)) for option, default in DEFAULTS)
        log.add(
            Launch(module, name, tuple(arguments), tuple(constexprs), chosen),
            _programs(grid, bound),
        )
        return
    for config in kernel.all_configs:
        tuned = (*constexprs, *config.kwargs.items())
        chosen = (("num_warps", config.num_warps), ("num_stages", config.num_stages))
        record = Launch(module, name, tuple(arguments), tuned, chosen)
        log.add(record, _programs(grid, {**bound, **config.kwargs}))


def specialisation(value: Any, *, specialise: bool = True) -> str:
    """How Triton specialises a runtime argument, in its notation (see the module docstring);
    without `specialise` (the kernel's `do_not_specialize`), an integer is just its type."""
    if isinstance(value, torch.Tensor):
        aligned = value.data_ptr() % 16 == 0
        return f"*{DTYPE_NAMES[value.dtype]}" + ("/16" if aligned else "")
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "u1"
    if isinstance(value, int):
        kind = "i32" if -(2**31) <= value < 2**31 else "i64"
        if not specialise:
            return kind
        if value == 1:
            return "1"
        return kind + ("/16" if value % 16 == 0 else "")
    if isinstance(value, float):
        return "fp32"
    raise TypeError(f"a Triton launch argument of type {type(value).__name__} cannot be recorded")


def _python_function(kernel: Any) -> Callable[..., Any]:
    """The Python function under a JIT, interpreted or autotuned kernel."""
    function = kernel
    while not inspect.isfunction(function):
        function = function.fn
    return function


def _unspecialised(kernel: Any, function: Callable[..., Any]) -> set[str]:
    """The names of the arguments the kernel was told not to specialise on."""
    jit = kernel.fn if isinstance(kernel, Autotuned) else kernel
    listed = getattr(jit, "do_not_specialize", None)
    if listed is None:  # an interpreted kernel keeps what it was given
        listed = getattr(jit, "kwargs", {}).get("do_not_specialize")
    names = list(inspect.signature(function).parameters)
    return {names[item] if isinstance(item, int) else item for item in listed or ()}


def _is_constexpr(function: Callable[..., Any], name: str) -> bool:
    annotation = inspect.signature(function).parameters[name].annotation
    return "constexpr" in str(annotation)


def _programs(grid: Any, meta: Mapping[str, Any]) -> int:
    sizes = grid(meta) if callable(grid) else grid
    return math.prod(sizes)
