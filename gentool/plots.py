"""Pictures of training: loss.png in each run folder, and the curves the HTML report embeds.

matplotlib is imported inside the functions, so `gentool --help` does not pay for it, and used
through its object-oriented API: a `Figure` rendered to PNG by the Agg canvas, with no pyplot
state and no GUI backend, so it works on machines without a display.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from gentool.atomic import atomic_write
from gentool.jsonl import read_lines
from gentool.run_files import RunFiles
from gentool.terminal import printable

# Logged per eval; plotted together where they share a scale.
METRIC_PANELS: dict[str, tuple[str, ...]] = {
    "FID": ("fid",),
    "KID": ("kid",),
    "precision / recall": ("precision", "recall"),
    "diversity (mean feature distance)": ("diversity", "diversity_real"),
    "reconstruction SSIM": ("ssim",),
    "reconstruction PSNR (dB)": ("psnr",),
}
_NOT_LOSSES = frozenset({"epoch", "step", "phase", "event"})
_SMOOTHING = 25  # steps in the moving average drawn over the raw loss curve


def read_history(run: RunFiles) -> list[dict[str, Any]]:
    """metrics.jsonl and epochs.jsonl of a run folder as one history, in step order."""
    records = read_lines(run.metrics_file) + read_lines(run.epochs_file)
    return sorted(records, key=lambda record: record["step"])  # stable: a step's lines keep order


def step_records(records: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The per-step lines: the losses each training step logged."""
    return [record for record in records if "event" not in record]


def event_records(records: Iterable[Mapping[str, Any]], event: str) -> list[Mapping[str, Any]]:
    return [record for record in records if record.get("event") == event]


def loss_families(records: Sequence[Mapping[str, Any]]) -> dict[str, list[str]]:
    """Logged values grouped for plotting: `loss_d` and `loss_g` share the "loss" panel,
    `d_real` and `d_fake` the "d" panel; a name without an underscore is a family of its own."""
    families: dict[str, list[str]] = {}
    for record in records:
        for key, value in record.items():
            if key in _NOT_LOSSES or not isinstance(value, (int, float)):
                continue
            family = key.split("_", 1)[0]
            names = families.setdefault(family, [])
            if key not in names:
                names.append(key)
    return families


def training_figure_png(records: Sequence[Mapping[str, Any]], *, title: str) -> bytes | None:
    """One PNG with a panel per loss family and per evaluated metric; None with nothing to draw."""
    steps = step_records(records)
    evals = [record for record in records if "event" in record]  # evaluations and epochs
    families = loss_families(steps)
    metric_panels = {
        panel: keys
        for panel, keys in METRIC_PANELS.items()
        if any(_finite(record.get(key)) for record in evals for key in keys)
    }
    panels = len(families) + len(metric_panels)
    if panels == 0:
        return None
    from matplotlib.figure import Figure

    columns = min(3, panels)
    rows = math.ceil(panels / columns)
    figure = Figure(figsize=(4.2 * columns, 3.0 * rows))
    flat_axes = list(figure.subplots(rows, columns, squeeze=False).flat)
    for axis, (family, keys) in zip(flat_axes, families.items(), strict=False):
        for key in keys:
            points = [(r["step"], r[key]) for r in steps if _finite(r.get(key))]
            if not points:
                continue
            xs, ys = zip(*points, strict=True)
            (line,) = axis.plot(xs, ys, alpha=0.25, linewidth=0.8)
            axis.plot(xs, _moving_average(ys), color=line.get_color(), label=_plot_text(key))
        axis.set_title(_plot_text(family))
        axis.set_xlabel("step")
        axis.legend(fontsize="small")
    for axis, (panel, keys) in zip(flat_axes[len(families) :], metric_panels.items(), strict=False):
        for key in keys:
            points = [(r["step"], r[key]) for r in evals if _finite(r.get(key))]
            if points:
                xs, ys = zip(*points, strict=True)
                axis.plot(xs, ys, marker="o", label=key)
        axis.set_title(panel)
        axis.set_xlabel("step")
        axis.legend(fontsize="small")
    for axis in flat_axes[panels:]:
        axis.set_visible(False)
    figure.suptitle(_plot_text(title))
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    return buffer.getvalue()


def write_loss_plot(run: RunFiles, *, title: str) -> Path | None:
    """Draw the run's history into its loss.png (atomically); None with nothing to draw yet."""
    out = run.loss_plot
    png = training_figure_png(read_history(run), title=title)
    if png is None:
        return None
    with atomic_write(out) as temporary:
        temporary.write_bytes(png)
    return out


def _moving_average(values: Sequence[float]) -> list[float]:
    averaged, total = [], 0.0
    for index, value in enumerate(values):
        total += value
        if index >= _SMOOTHING:
            total -= values[index - _SMOOTHING]
        averaged.append(total / min(index + 1, _SMOOTHING))
    return averaged


def _plot_text(text: str) -> str:
    """A run's or a plugin's name as matplotlib should draw it: printable (its font has no
    glyph for an undecodable byte, and fails), and with `$` escaped, which would start a formula
    that fails to parse on a name like `a$^$`."""
    return printable(text).replace("$", r"\$")


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)
