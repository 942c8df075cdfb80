"""Pictures of training: loss.png in each run folder, and the curves the HTML report embeds.

matplotlib is imported inside the functions, so `gentool --help` does not pay for it, and used
through its object-oriented API: a `Figure` rendered to PNG by the Agg canvas, with no pyplot
state and no GUI backend, so it works on machines without a display.
"""

from __future__ import annotations

import io
import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from gentool.atomic import atomic_write
from gentool.jsonl import iter_lines, read_lines
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
    "label accuracy": ("label_accuracy",),
}
_METRIC_KEYS = frozenset(key for keys in METRIC_PANELS.values() for key in keys)
_NOT_LOSSES = frozenset({"epoch", "step", "phase", "event"})
_SMOOTHING = 25  # points (steps, until a history is thinned) averaged over the raw loss curve
# What one figure draws, whatever a model logs or a hand-edited file holds: drawing time and
# memory grow with panels and points, and a figure of hundreds of panels is unreadable anyway.
MAX_CURVES = 16  # per-step names drawn, in order of first appearance; a note names the rest
MAX_POINTS = 2000  # per curve: more than a panel's width in pixels
MAX_NAMES_LEFT_OUT = 1000  # distinct names counted past MAX_CURVES; beyond, "1000+"
NAMES_IN_NOTE = 5  # left-out names the note shows
MAX_NAME_CHARS = 40  # of a name in a legend, a panel title or the note
MAX_TITLE_CHARS = 200  # a run folder's path, past which it is wider than any figure
NOTE_INCHES = 0.3  # the strip under the panels that names what was left out


def read_history(run: RunFiles) -> list[dict[str, Any]]:
    """metrics.jsonl and epochs.jsonl of a run folder as one history, in step order."""
    records = read_lines(run.metrics_file) + read_lines(run.epochs_file)
    return sorted(records, key=lambda record: record["step"])  # stable: a step's lines keep order


def step_records(records: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The per-step lines: the losses each training step logged."""
    return [record for record in records if "event" not in record]


def event_records(records: Iterable[Mapping[str, Any]], event: str) -> list[Mapping[str, Any]]:
    return [record for record in records if record.get("event") == event]


class Curve:
    """At most MAX_POINTS (step, value) points of one logged value, spread evenly over however
    long a history: every point until full, then every second, every fourth ..., and the latest.
    Kept points are those whose index is a multiple of `stride`."""

    def __init__(self) -> None:
        self.kept: list[tuple[int, float]] = []
        self.stride = 1
        self.seen = 0
        self.latest: tuple[int, float] | None = None

    def add(self, step: int, value: float) -> None:
        if self.seen % self.stride == 0:
            self.kept.append((step, value))
            if len(self.kept) > MAX_POINTS:
                del self.kept[1::2]
                self.stride *= 2
        self.seen += 1
        self.latest = (step, value)

    def points(self) -> list[tuple[int, float]]:
        """The kept points and the latest, in step order (a hand-edited file may not be)."""
        latest_kept = (self.seen - 1) % self.stride == 0
        points = self.kept if latest_kept or self.latest is None else [*self.kept, self.latest]
        return sorted(points, key=lambda point: point[0])


class PlottedHistory:
    """What a figure draws of a history, gathered in one pass and in bounded memory however
    many lines and names it has: a curve for each of the first MAX_CURVES per-step names (in
    order of first appearance) and for each evaluated metric, and the per-step names left out."""

    def __init__(self, records: Iterable[Mapping[str, Any]]) -> None:
        self.losses: dict[str, Curve] = {}
        self.metrics: dict[str, Curve] = {}
        self.left_out: dict[str, None] = {}  # the first MAX_NAMES_LEFT_OUT of them, in order
        self.more_left_out = False  # more than that
        for record in records:
            if "event" not in record:
                self._add_losses(record)
                continue
            for key in _METRIC_KEYS & record.keys():  # evaluations, and epochs' diversity
                if _finite(value := record[key]):
                    self.metrics.setdefault(key, Curve()).add(record["step"], value)

    def loss_families(self) -> dict[str, list[str]]:
        """Drawn names grouped into panels: `loss_d` and `loss_g` share the "loss" panel,
        `d_real` and `d_fake` the "d" panel; a name without an underscore is a family of its own."""
        families: dict[str, list[str]] = {}
        for name in self.losses:
            families.setdefault(name.split("_", 1)[0], []).append(name)
        return families

    def _add_losses(self, record: Mapping[str, Any]) -> None:
        for key, value in record.items():
            if key in _NOT_LOSSES or not isinstance(value, (int, float)):
                continue
            curve = self.losses.get(key)
            if curve is None and len(self.losses) >= MAX_CURVES:
                self._leave_out(key)
                continue
            if curve is None:
                curve = self.losses[key] = Curve()
            if _finite(value):
                curve.add(record["step"], value)

    def _leave_out(self, name: str) -> None:
        if name in self.left_out:
            return
        if len(self.left_out) < MAX_NAMES_LEFT_OUT:
            self.left_out[name] = None
        else:
            self.more_left_out = True

    def left_out_note(self) -> str:
        """One line naming what was not drawn, or ""."""
        if not self.left_out:
            return ""
        count = len(self.left_out)
        plural = "s" if count > 1 or self.more_left_out else ""
        counted = f"{count}{'+' if self.more_left_out else ''} more logged value{plural}"
        names = ", ".join(_plot_text(name) for name in list(self.left_out)[:NAMES_IN_NOTE])
        more = ", …" if count > NAMES_IN_NOTE else ""
        return f"{counted} not drawn: {names}{more}"


def training_figure_png(records: Iterable[Mapping[str, Any]], *, title: str) -> bytes | None:
    """One PNG with a panel per loss family and per evaluated metric; None with nothing to draw.
    `records` is read once, and may be a stream of any length."""
    history = PlottedHistory(records)
    families = history.loss_families()
    metric_panels = {
        panel: keys
        for panel, keys in METRIC_PANELS.items()
        if any(key in history.metrics for key in keys)
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
            points = history.losses[key].points()
            if not points:
                continue
            xs, ys = zip(*points, strict=True)
            (line,) = axis.plot(xs, ys, alpha=0.25, linewidth=0.8)
            axis.plot(xs, _moving_average(ys), color=line.get_color(), label=_plot_text(key))
        _label(axis, _plot_text(family))
    for axis, (panel, keys) in zip(flat_axes[len(families) :], metric_panels.items(), strict=False):
        for key in keys:
            points = history.metrics[key].points() if key in history.metrics else []
            if points:
                xs, ys = zip(*points, strict=True)
                axis.plot(xs, ys, marker="o", label=key)
        _label(axis, panel)
    for axis in flat_axes[panels:]:
        axis.set_visible(False)
    figure.suptitle(_plot_text(title, limit=MAX_TITLE_CHARS))
    note = history.left_out_note()
    if note:  # below the panels, in a strip kept for it
        figure.text(0.01, 0.01, note, fontsize="small")
    figure.tight_layout(rect=(0, NOTE_INCHES / figure.get_figheight() if note else 0, 1, 1))
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    return buffer.getvalue()


def write_loss_plot(run: RunFiles, *, title: str) -> Path | None:
    """Draw the run's history into its loss.png (atomically); None with nothing to draw yet.
    The files are streamed, not held: a long or hand-edited history costs time, not memory."""
    out = run.loss_plot
    history = itertools.chain(iter_lines(run.metrics_file), iter_lines(run.epochs_file))
    png = training_figure_png(history, title=title)
    if png is None:
        return None
    with atomic_write(out) as temporary:
        temporary.write_bytes(png)
    return out


def _label(axis: Any, title: str) -> None:
    axis.set_title(title)
    axis.set_xlabel("step")
    axis.legend(fontsize="small")


def _moving_average(values: Sequence[float]) -> list[float]:
    averaged, total = [], 0.0
    for index, value in enumerate(values):
        total += value
        if index >= _SMOOTHING:
            total -= values[index - _SMOOTHING]
        averaged.append(total / min(index + 1, _SMOOTHING))
    return averaged


def _plot_text(text: str, limit: int = MAX_NAME_CHARS) -> str:
    """A run's or a model's name as matplotlib should draw it: printable (its font has no glyph
    for an undecodable byte, and fails), shortened to `limit` characters, and with `$` escaped,
    which would start a formula that fails to parse on a name like `a$^$`."""
    shown = printable(text)
    if len(shown) > limit:
        shown = shown[: limit - 1] + "…"
    return shown.replace("$", r"\$")


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)
