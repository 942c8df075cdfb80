"""The values training steps log, kept on the device and brought to the CPU together.

Reading a value on the CPU waits for the device to finish its queued work, so a trainer that
reads every step's losses at once never lets a GPU run ahead. Here a step only keeps its
(detached) values; every `every` steps, at the last step of an epoch, and when training stops,
they are stacked and copied in one transfer, checked, written to metrics.jsonl and shown. A
single process also copies once a second at most, so a slow step's losses appear at once; the
processes of a distributed run copy at the same steps, as they reduce their values together
(with whether any of them was asked to stop).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from gentool.errors import PluginError
from gentool.jsonl import JsonLinesWriter
from gentool.loggers import StepValues
from gentool.training.display import TrainingDisplay
from gentool.training.distributed import Ranks, sum_over_ranks
from gentool.training.tracking import Trackers

LOG_SECONDS = 1.0  # a single process copies its logged values to the CPU at least this often
FiniteCheck = Callable[[Mapping[str, float], int, int], None]  # (values, epoch, step in epoch)


@dataclass(frozen=True)
class LoggedStep:
    epoch: int  # from 0
    step_in_epoch: int  # from 1
    global_step: int  # from 1
    phase: str | None
    names: tuple[str, ...]
    values: tuple[torch.Tensor, ...]  # 0-d, on the device


class StepLog:
    """Keeps steps' logged values until the logging interval, then copies them in one go."""

    def __init__(
        self,
        writer: JsonLinesWriter | None,
        display: TrainingDisplay,
        *,
        every: int,
        ranks: Ranks,
        device: torch.device,
        plugin_name: str,
        check: FiniteCheck | None = None,
    ) -> None:
        self.writer = writer  # None on ranks other than 0, which write no files
        self.display = display
        self.every = every
        self.ranks = ranks
        self.device = device
        self.check = check  # raises on a non-finite value; the session sets it
        self.trackers: Trackers | None = None  # --log's loggers, on rank 0; the session sets them
        self.plugin_name = plugin_name
        self.pending: list[LoggedStep] = []
        self.copied_at = time.perf_counter()

    def add(self, step: LoggedStep, *, flush: bool = False, stop_asked: bool = False) -> bool:
        """Keep one step's values; copy what is kept when the interval is reached or `flush`.

        Returns whether training must stop now: a stop asked of this process (or, distributed,
        of any process, which the processes learn together at a copy).
        """
        for name, value in zip(step.names, step.values, strict=True):
            if value.numel() != 1:
                raise PluginError(
                    f"{self.plugin_name}: training_step logged {name!r} of shape "
                    f"{tuple(value.shape)}; log one number per name"
                )
        self.pending.append(step)
        due = flush or len(self.pending) >= self.every
        if self.ranks.distributed:
            return self.copy(stop_asked=stop_asked) if due else False
        if due or stop_asked or time.perf_counter() - self.copied_at >= LOG_SECONDS:
            self.copy()
        return stop_asked

    def copy(self, *, stop_asked: bool = False) -> bool:
        """Bring the kept values to the CPU in one transfer, check, write and show them;
        whether any process was asked to stop."""
        values = [value.reshape(()) for step in self.pending for value in step.values]
        packed = (
            torch.stack([value.to(self.device, torch.float64) for value in values])
            if values
            else torch.zeros(0, dtype=torch.float64, device=self.device)
        )
        if self.ranks.distributed:
            flag = torch.tensor([float(stop_asked)], dtype=torch.float64, device=self.device)
            packed = sum_over_ranks(torch.cat([packed, flag]))
            packed[:-1] /= self.ranks.world_size
        numbers = packed.tolist()  # the copy to the CPU
        stop = bool(numbers.pop() > 0) if self.ranks.distributed else stop_asked
        steps, self.pending = self.pending, []
        self.copied_at = time.perf_counter()
        self._record(steps, numbers)
        return stop

    def _record(self, steps: list[LoggedStep], numbers: list[float]) -> None:
        lines, shown, logged, start = [], [], [], 0
        try:
            for step in steps:
                values = dict(
                    zip(step.names, numbers[start : start + len(step.names)], strict=True)
                )
                start += len(step.names)
                if self.check is not None:
                    self.check(values, step.epoch, step.step_in_epoch)
                phase = {"phase": step.phase} if step.phase else {}
                lines.append({"epoch": step.epoch + 1, "step": step.global_step, **phase, **values})
                shown.append(values)
                logged.append(StepValues(step.global_step, step.epoch + 1, values, step.phase))
        finally:  # the lines before a non-finite one are kept, as they were logged
            if self.writer is not None:
                self.writer.write(lines)
            self.display.show_values(shown)
            if self.trackers is not None:
                self.trackers.scalars(logged)
