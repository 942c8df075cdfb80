"""loss.png and the report's curves, drawn from made-up histories."""

from __future__ import annotations

import os

import pytest

from gentool.plots import training_figure_png


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
