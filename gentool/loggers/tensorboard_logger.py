"""`--log tensorboard`: TensorBoard event files in the run's tb/ folder.

Losses and evaluation metrics are scalars under their own names, each epoch's sample grid is the
image "samples", and the run's description the text "config". View them with
`tensorboard --logdir RUN/tb` (or the parent of several runs' folders).

A resumed run starts a new event file whose first event tells TensorBoard to drop what earlier
files hold for steps after the checkpoint (`purge_step`): a training killed between two
checkpoints logged steps that the resumed one trains again, and they must not appear twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from gentool.loggers import LoggerUnavailable, RunInfo, StepValues
from gentool.run_files import TENSORBOARD_DIR

try:
    from tensorboard.compat.proto.summary_pb2 import Summary
    from torch.utils.tensorboard import SummaryWriter
except ModuleNotFoundError as error:
    if error.name != "tensorboard":
        raise
    raise LoggerUnavailable(
        'the tensorboard package is not installed: pip install "gentool[tensorboard]"'
    ) from None


class TensorBoardLogger:
    """Writes a run's logged values, grids and description as TensorBoard events."""

    def __init__(self, run_dir: Path, run: RunInfo) -> None:
        purge_step = run.start_step + 1 if run.resumed else None
        self.writer = SummaryWriter(log_dir=str(run_dir / TENSORBOARD_DIR), purge_step=purge_step)

    def scalars(self, steps: Sequence[StepValues]) -> None:
        # One event per step holding all its values: TensorBoard checksums every event in
        # Python, and this costs a third of what an event per value (add_scalar) does.
        for logged in steps:
            values = [
                Summary.Value(tag=name, simple_value=value) for name, value in logged.values.items()
            ]
            self.writer.file_writer.add_summary(Summary(value=values), logged.step)
        self.writer.flush()  # in the file at each logging interval, as metrics.jsonl is

    def image(self, step: int, name: str, pixels: np.ndarray) -> None:
        self.writer.add_image(name, pixels, step, dataformats="HWC")
        self.writer.flush()

    def text(self, step: int, name: str, text: str) -> None:
        # TensorBoard renders text as Markdown: indented, it is shown verbatim.
        self.writer.add_text(name, "".join(f"    {line}\n" for line in text.splitlines()), step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
