"""loss.png and the report's curves, drawn from made-up histories."""

from __future__ import annotations

import io
import itertools
import json
import math
import os
import tracemalloc

import pytest
from PIL import Image

from gentool.plots import (
    MAX_CURVES,
    MAX_NAMES_LEFT_OUT,
    MAX_POINTS,
    PlottedHistory,
    training_figure_png,
    write_loss_plot,
)
from gentool.run_files import RunFiles


def losses(steps: int, **extra: float) -> list[dict]:
    return [{"step": step, "loss": 1 / (step + 1), **extra} for step in range(steps)]


@pytest.mark.parametrize(
    "title",
    [os.fsdecode(b"dcgan \xb7 runs/dcgan/run\xff"), "dcgan · runs/a$x^$b", "dcgan · run\x1b[2J"],
    ids=["not utf-8", "a formula that does not parse", "a control character"],
)
def test_a_run_named_anyhow_is_drawn_with_its_name_as_text(title):
    png = training_figure_png(losses(5, **{"loss_$^$": 2.0}), title=title)
    assert png is not None and png.startswith(b"\x89PNG")


def test_a_model_logging_hundreds_of_names_gets_a_bounded_figure_that_names_the_rest():
    names = [f"value{index}_{index}" for index in range(300)]  # a panel each
    records = [{"step": step, **dict.fromkeys(names, float(step))} for step in range(3)]
    history = PlottedHistory(records)
    assert list(history.losses) == names[:MAX_CURVES]
    assert history.left_out_note() == (
        f"{300 - MAX_CURVES} more logged values not drawn: "
        + ", ".join(names[MAX_CURVES : MAX_CURVES + 5])
        + ", …"
    )
    with Image.open(io.BytesIO(training_figure_png(records, title="many"))) as figure:
        assert figure.height <= 3.0 * 90 * math.ceil(MAX_CURVES / 3) + 90  # rows of 3 panels


def test_a_hand_edited_line_of_a_million_names_counts_a_bounded_number_of_them():
    history = PlottedHistory([{"step": 0, **{f"n{index}": 1.0 for index in range(10**6)}}])
    assert len(history.losses) == MAX_CURVES and len(history.left_out) == MAX_NAMES_LEFT_OUT
    assert history.left_out_note().startswith(f"{MAX_NAMES_LEFT_OUT}+ more logged values")


def test_a_long_history_keeps_evenly_spread_points_and_the_latest():
    history = PlottedHistory({"step": step, "loss": float(step)} for step in range(100_001))
    points = history.losses["loss"].points()
    assert MAX_POINTS // 2 <= len(points) <= MAX_POINTS + 1
    steps = [step for step, _ in points]
    assert steps[0] == 0 and steps[-1] == 100_000
    gaps = {later - earlier for earlier, later in itertools.pairwise(steps[:-1])}
    assert len(gaps) == 1  # evenly spread


def test_a_short_history_is_drawn_whole_in_step_order():
    records = [{"step": step, "loss": float(step)} for step in (2, 0, 1)]  # edited out of order
    assert PlottedHistory(records).losses["loss"].points() == [(0, 0.0), (1, 1.0), (2, 2.0)]


def test_loss_png_of_a_long_history_is_drawn_in_bounded_memory(tmp_path):
    run = RunFiles(tmp_path)
    lines = (
        json.dumps({"epoch": 0, "step": step, "loss_d": 0.5, "loss_g": step % 7}) + "\n"
        for step in range(200_000)
    )
    run.metrics_file.write_text("".join(lines))
    training_figure_png(losses(5), title="warm-up")  # matplotlib's imports and fonts, once
    tracemalloc.start()
    try:
        write_loss_plot(run, title="long")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert run.loss_plot.stat().st_size > 0
    assert peak < 32 * 2**20, f"{peak / 2**20:.0f} MiB"


def test_label_accuracy_is_plotted_from_evaluations_and_its_classes_are_not():
    evaluation = {"step": 4, "event": "eval", "label_accuracy": 0.5,
                  "label_accuracy_by_class": {"circle": 0.25, "ring": 0.75}}  # fmt: skip
    history = PlottedHistory([*losses(5), evaluation])
    assert history.metrics["label_accuracy"].points() == [(4, 0.5)]
    assert "label_accuracy_by_class" not in history.metrics
    png = training_figure_png([*losses(5), evaluation], title="cdcgan")
    assert png is not None and png.startswith(b"\x89PNG")
