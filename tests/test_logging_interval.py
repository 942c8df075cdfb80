"""Logged values stay on the device between logging intervals: a step copies nothing to the CPU
for logging, and at most once for the finite-loss guard of automatic optimisation.

Every call that would copy a CUDA tensor to the CPU (and wait for the device) is counted through
a TorchFunctionMode, so the test counts on the CPU what would be synchronisations on a GPU. Only
the trainer's own calls count: what the model and PyTorch's optimizers do is theirs (Adam reads
its step counter, a CPU tensor, with .item()).
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest
from rich.console import Console
from torch.overrides import TorchFunctionMode

from gentool.registry import resolve
from gentool.training import TrainRequest, logbook, loop, run_training
from gentool.training.logbook import StepLog
from tests.conftest import TINY_DCGAN

ROOT = Path(__file__).resolve().parent.parent
COPIES_TO_HOST = {"__bool__", "__float__", "__int__", "item", "tolist", "cpu", "numpy"}
TINY_VAE = {"image_size": 16, "latent_dim": 4, "features": 4}


class CopyCounter(TorchFunctionMode):
    """Counts calls that bring a tensor's value to the host, while `counting` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.counting = False
        self.copies: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if self.counting and name in COPIES_TO_HOST and _called_by_gentool():
            self.copies.append(name)
        return func(*args, **(kwargs or {}))


def _called_by_gentool() -> bool:
    caller = Path(sys._getframe(2).f_code.co_filename).resolve()
    return any(caller.is_relative_to(ROOT / folder) for folder in ("gentool", "kernels"))


def count_copies(monkeypatch: pytest.MonkeyPatch, counter: CopyCounter) -> dict[str, list]:
    """The copies made inside each training step, each StepLog.add and each logging copy."""
    seen: dict[str, list] = {"step": [], "add": [], "copy": []}

    def watched(key, function):
        def wrapper(*args, **kwargs):
            outer, counter.counting = counter.counting, True
            start = len(counter.copies)
            try:
                return function(*args, **kwargs)
            finally:
                seen[key].append(counter.copies[start:])
                counter.counting = outer

        return wrapper

    monkeypatch.setattr(loop, "run_step", watched("step", loop.run_step))
    monkeypatch.setattr(StepLog, "add", watched("add", StepLog.add))
    monkeypatch.setattr(StepLog, "copy", watched("copy", StepLog.copy))
    monkeypatch.setattr(logbook, "LOG_SECONDS", float("inf"))
    return seen


@pytest.mark.parametrize(
    ("model", "config", "copies_per_step"),
    [("dcgan", TINY_DCGAN, []), ("vae", TINY_VAE, ["__bool__"])],  # manual, then automatic
)
def test_a_step_copies_to_the_host_only_for_the_finite_loss_guard(
    model, config, copies_per_step, tmp_path, monkeypatch, tiny_cpu_training
):
    counter = CopyCounter()
    seen = count_copies(monkeypatch, counter)
    request = TrainRequest(
        resolve(model), config_values=config, limit=80, batch_size=8, epochs=1,
        run_dir=tmp_path / "run", device="cpu", log_every=4,
    )  # fmt: skip
    with counter:
        run_training(request, Console(file=io.StringIO()))
    assert len(seen["step"]) == 10
    assert seen["step"] == [copies_per_step] * 10
    # Logging copies at steps 4 and 8 and at the epoch's last step, one transfer each, and
    # keeping a step's values copies nothing.
    assert seen["copy"] == [["tolist"]] * 3
    assert [copy for copies in seen["add"] for copy in copies] == ["tolist"] * 3
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert [line["step"] for line in lines] == list(range(1, 11))


def test_a_non_finite_loss_in_automatic_mode_stops_at_its_step_without_waiting(
    tmp_path, tiny_cpu_training
):
    from dataclasses import replace

    from gentool.errors import TrainingError
    from tests.conftest import entry_for

    vae = resolve("vae")

    def build(config, spec):
        model = vae.plugin.build(config, spec)
        step = model.training_step

        def training_step(batch, ctx):
            logs = step(batch, ctx)
            if ctx.global_step == 2:
                logs["loss"] = logs["loss"] * float("nan")
            return logs

        model.training_step = training_step
        return model

    broken = entry_for(replace(vae.plugin, build=build), vae)
    request = TrainRequest(
        broken, config_values=TINY_VAE, limit=80, batch_size=8, epochs=1,
        run_dir=tmp_path / "run", device="cpu", log_every=50,
    )  # fmt: skip
    with pytest.raises(TrainingError, match=r"non-finite values at epoch 1, step 3 \(loss=nan"):
        run_training(request, Console(file=io.StringIO()))
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert [line["step"] for line in lines] == [1, 2]  # the steps before it are kept
