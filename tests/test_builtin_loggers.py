"""The built-in loggers: TensorBoard's event files, read back with TensorBoard's own reader, and
metrics.csv hold every number metrics.jsonl holds, at the same steps, once each, however the run
was stopped and resumed."""

from __future__ import annotations

import csv
import io
import json
import os
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from rich.console import Console
from tensorboard.backend.event_processing import event_accumulator
from typer.testing import CliRunner

from gentool.cli import app
from gentool.errors import PluginError
from gentool.loggers import RunInfo, StepValues
from gentool.loggers import csv_logger as csv_logger_module
from gentool.loggers.csv_logger import CsvLogger
from gentool.plugins.dcgan.model import DCGAN
from gentool.training import TrainRequest, run_training
from tests.conftest import TINY_DCGAN, TINY_DCGAN_ARGS, entry_for, one_line_error

runner = CliRunner()
TINY = [*TINY_DCGAN_ARGS, "--limit", "32", "-b", "16", "--device", "cpu", "--epochs", "2"]
EVERY_EVENT = {
    event_accumulator.SCALARS: 0,  # 0: keep every event, where the reader would sample
    event_accumulator.IMAGES: 0,
    event_accumulator.TENSORS: 0,
}
ROW_KEYS = ("step", "epoch", "phase")


def read_events(run_dir: Path) -> event_accumulator.EventAccumulator:
    accumulator = event_accumulator.EventAccumulator(str(run_dir / "tb"), EVERY_EVENT)
    accumulator.Reload()
    return accumulator


def event_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    events = read_events(run_dir)
    return {
        name: [(event.step, event.value) for event in events.Scalars(name)]
        for name in events.Tags()["scalars"]
    }


def logged_numbers(run_dir: Path) -> list[dict]:
    """metrics.jsonl's lines: their step, epoch, phase and numbers (an evaluation's settings,
    such as its image count, are no measurements)."""
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [
        {key: value for key, value in line.items() if key in ROW_KEYS or isinstance(value, float)}
        for line in lines
    ]


def logged_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    scalars: dict[str, list[tuple[int, float]]] = {}
    for line in logged_numbers(run_dir):
        for name, value in line.items():
            if name not in ROW_KEYS:
                scalars.setdefault(name, []).append((line["step"], value))
    return scalars


def table_rows(run_dir: Path) -> list[dict]:
    """metrics.csv's rows, their empty cells left out and their numbers read."""
    with (run_dir / "metrics.csv").open(newline="") as file:
        rows = list(csv.DictReader(file))
    return [
        {
            key: int(text) if key in ("step", "epoch") else text if key == "phase" else float(text)
            for key, text in row.items()
            if text != ""
        }
        for row in rows
    ]


def test_tensorboard_and_csv_hold_every_value_grid_and_the_config(in_tmp):
    result = runner.invoke(
        app,
        ["train", "dcgan", *TINY, "--run-dir", "run", "--eval-every", "1",
         "--log", "tensorboard,csv"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    run = in_tmp / "run"
    logged, events = logged_scalars(run), event_scalars(run)
    assert {"loss_d", "loss_g", "fid", "kid"} <= set(logged)
    assert set(events) == set(logged)
    for name, values in logged.items():  # TensorBoard keeps scalars as 32-bit floats
        assert [step for step, _ in events[name]] == [step for step, _ in values], name
        assert [value for _, value in events[name]] == pytest.approx(
            [value for _, value in values], rel=1e-6
        )
    images = read_events(run).Images("samples")
    assert [image.step for image in images] == [2, 4]
    for epoch, image in enumerate(images, start=1):
        shown = np.asarray(Image.open(io.BytesIO(image.encoded_image_string)).convert("RGB"))
        assert np.array_equal(
            shown, np.asarray(Image.open(run / "samples" / f"epoch_{epoch:04d}.png"))
        )
    (text,) = read_events(run).Tensors("config/text_summary")
    description = json.loads(textwrap.dedent(text.tensor_proto.string_val[0].decode()))
    assert text.step == 0 and description["model"] == "dcgan"
    assert description["config"] == json.loads((run / "run.json").read_text())["config"]
    assert table_rows(run) == logged_numbers(run)


def failing_in_step(entry, at_step: int):
    """dcgan, raising in its step `at_step` (from 1): the run stops at its last checkpoint, with
    the steps before it logged."""

    class Failing(DCGAN):
        def training_step(self, batch, ctx):
            if ctx.global_step + 1 == at_step:
                raise RuntimeError("the machine went away")
            return super().training_step(batch, ctx)

    return entry_for(replace(entry.plugin, build=lambda config, spec: Failing(config, spec)), entry)


def train(entry, run_dir: Path, *, epochs: int, resume: bool = False, log=None):
    request = TrainRequest(
        entry, config_values={} if resume else TINY_DCGAN, limit=None if resume else 32,
        batch_size=None if resume else 16, epochs=epochs, run_dir=run_dir, resume=resume,
        device="cpu", log_every=1, log=log,
    )  # fmt: skip
    return run_training(request, Console(file=io.StringIO()))


@pytest.mark.parametrize("stop", ["after epoch 1", "in epoch 2, a step after the checkpoint"])
def test_a_stopped_and_resumed_run_logs_each_step_once(
    dcgan_entry, tmp_path, tiny_cpu_training, stop
):
    whole, stopped = tmp_path / "whole", tmp_path / "stopped"
    train(dcgan_entry, whole, epochs=2, log="tensorboard,csv")
    if stop == "after epoch 1":
        train(dcgan_entry, stopped, epochs=1, log="tensorboard,csv")
    else:
        with pytest.raises(PluginError, match="the machine went away"):
            train(failing_in_step(dcgan_entry, 4), stopped, epochs=2, log="tensorboard,csv")
        assert [step for step, _ in event_scalars(stopped)["loss_d"]] == [
            1,
            2,
            3,
        ]  # step 3 is stale
    train(dcgan_entry, stopped, epochs=2, resume=True)  # the run's own loggers, from run.json
    assert event_scalars(stopped) == event_scalars(whole)
    assert [image.step for image in read_events(stopped).Images("samples")] == [2, 4]
    assert table_rows(stopped) == table_rows(whole) == logged_numbers(whole)


def test_tensorboard_not_installed_is_a_one_line_error_before_training(in_tmp, monkeypatch):
    for module in [name for name in sys.modules if name.startswith("torch.utils.tensorboard")]:
        monkeypatch.delitem(sys.modules, module)
    monkeypatch.delitem(sys.modules, "gentool.loggers.tensorboard_logger", raising=False)
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # what an import then cannot find
    result = runner.invoke(
        app, ["train", "dcgan", *TINY, "--run-dir", "run", "--log", "tensorboard"]
    )
    assert one_line_error(result) == (
        "error: tensorboard in --log: the tensorboard package is not installed: pip install "
        '"gentool[tensorboard]"'
    )
    assert not (in_tmp / "run").exists()


RUN = RunInfo(
    model="dcgan", config={}, data={}, seed=0, batch_size=16, epochs=2, resumed=False, start_step=0
)


def test_csv_widens_its_header_for_a_value_first_logged_later(tmp_path):
    table = CsvLogger(tmp_path, RUN)
    table.scalars([StepValues(1, 1, {"loss": 0.5}), StepValues(2, 1, {"loss": 0.25})])
    table.scalars([StepValues(2, 1, {"fid": 3.0})])
    table.scalars([StepValues(3, 2, {"loss": 0.125}, phase="fine-tune")])
    table.close()
    assert (tmp_path / "metrics.csv").read_text() == (
        "step,epoch,loss,fid,phase\n1,1,0.5,,\n2,1,0.25,,\n2,1,,3.0,\n3,2,0.125,,fine-tune\n"
    )


def test_csv_of_a_resumed_run_keeps_the_rows_up_to_its_checkpoint(tmp_path):
    (tmp_path / "metrics.csv").write_text(
        "step,epoch,loss\n1,1,0.5\n2,1,0.25\n3,2,0.125\n4,2,0.0625\n5,3,0.03"  # the last one torn
    )
    table = CsvLogger(tmp_path, replace(RUN, resumed=True, start_step=2))
    table.scalars([StepValues(3, 2, {"loss": 0.1})])
    table.close()
    assert (tmp_path / "metrics.csv").read_text() == "step,epoch,loss\n1,1,0.5\n2,1,0.25\n3,2,0.1\n"


def test_csv_takes_back_a_row_the_disk_cut_short(tmp_path, monkeypatch):
    table = CsvLogger(tmp_path, RUN)
    table.scalars([StepValues(1, 1, {"loss": 0.5})])
    before = (tmp_path / "metrics.csv").read_text()
    write = os.write

    def half_written(descriptor: int, data: bytes) -> int:
        return write(descriptor, data[: len(data) // 2])

    monkeypatch.setattr(csv_logger_module.os, "write", half_written)
    with pytest.raises(OSError, match="No space left on device"):
        table.scalars([StepValues(2, 1, {"loss": 0.25}), StepValues(3, 1, {"loss": 0.125})])
    assert (tmp_path / "metrics.csv").read_text() == before
