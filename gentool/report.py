"""`gentool report RUN`: one self-contained HTML file about a training run.

Config, data, timing, loss and metric curves, sample grids over the epochs and reconstructions,
with every picture inlined as a data: URI, so the file can be mailed or archived alone and opens
without any network request.
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from gentool.atomic import write_text
from gentool.plots import event_records, read_history, step_records, training_figure_png
from gentool.record import RunRecord
from gentool.run_files import RunFiles
from gentool.terminal import counted, printable

MAX_EPOCH_GRIDS = 12  # sample grids shown: evenly spaced over the epochs, the last included

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 70em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.5em 0; }
td, th { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: left; font-size: 0.9em; }
th { background: #f4f4f4; }
figure { display: inline-block; margin: 0.5em; text-align: center; }
figure img { image-rendering: pixelated; max-width: 100%; }
figcaption { font-size: 0.85em; color: #555; }
"""


def write_report(run: RunFiles, record: RunRecord, out: Path | None = None) -> Path:
    """Write the run's report (default RUN/report.html) atomically and return its path."""
    records = read_history(run)
    name = record.plugin.name
    sections = [
        f"<h1>{_text(name)} · {_text(run)}</h1>",
        _summary(record),
        _section("Config", _table(record.config.items())),
        _section("Data", _table(_data_rows(record))),
        _section("Timing", _timing(records, record)),
        _curves(records, name),
        _latest_eval(records),
        _epoch_grids(run),
        _reconstructions(run),
    ]
    body = "\n".join(section for section in sections if section)
    page = (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>gentool report: {_text(name)} · {_text(run)}</title>"
        f"<style>{_STYLE}</style></head>\n<body>\n{body}\n</body></html>\n"
    )
    path = out or run.report_file
    write_text(path, page)
    return path


def _summary(record: RunRecord) -> str:
    training, plugin = record.training, record.plugin
    rows = [
        ("model", f"{plugin.name} ({plugin.distribution} {plugin.version})"),
        ("gentool", record.gentool_version),
        (
            "trained",
            f"{record.progress.epoch} of {counted(training.epochs, 'epoch')}, "
            f"{counted(record.progress.global_step, 'step')}",
        ),
        ("batch size", training.batch_size),
        ("seed", training.seed),
        ("device", training.device),
        ("created", record.created),
        ("updated", record.updated),
    ]
    return _table(rows)


def _data_rows(record: RunRecord) -> list[tuple[str, Any]]:
    data, spec = record.data, record.data.spec
    classes = ", ".join(spec.class_names) or "none (unlabelled)"
    return [
        ("source", data.source),
        ("images", data.count),
        ("shape", f"{spec.channels}×{spec.height}×{spec.width}"),
        ("classes", classes),
        ("fingerprint", data.fingerprint),
    ]


def _timing(records: list[dict[str, Any]], record: RunRecord) -> str:
    epochs = event_records(records, "epoch")
    if not epochs:
        return _table([("created", record.created), ("last checkpoint", record.updated)])
    seconds = [r.get("seconds") if _finite(r.get("seconds")) else math.nan for r in epochs]
    rows = [
        (f"epoch {r.get('epoch')}", f"{time:.1f} s")
        for r, time in zip(epochs, seconds, strict=True)
    ]
    total = sum(time for time in seconds if math.isfinite(time))
    rows.append(("total", f"{total:.1f} s"))
    return _table(rows)


def _curves(records: list[dict[str, Any]], name: str) -> str:
    png = training_figure_png(records, title=name)
    if png is None:
        return _section("Losses and metrics", "<p>No steps logged yet.</p>")
    return _section("Losses and metrics", _figure(png, "per step; metrics per evaluation"))


def _latest_eval(records: list[dict[str, Any]]) -> str:
    evals = event_records(records, "eval")
    if not evals:
        return ""
    latest = evals[-1]
    rows = [(key, _format(value)) for key, value in latest.items() if key != "event"]
    label = f"Latest evaluation (epoch {latest.get('epoch')}, {len(step_records(records))} steps)"
    return _section(label, _table(rows))


def _epoch_grids(run: RunFiles) -> str:
    grids = run.epoch_grids()
    if not grids:
        return ""
    if len(grids) > MAX_EPOCH_GRIDS:
        stride = (len(grids) - 1) / (MAX_EPOCH_GRIDS - 1)
        grids = [grids[round(index * stride)] for index in range(MAX_EPOCH_GRIDS)]
    figures = "".join(_figure(path.read_bytes(), f"epoch {epoch}") for epoch, path in grids)
    return _section("Samples over the epochs (same seed each epoch)", figures)


def _reconstructions(run: RunFiles) -> str:
    grids = run.reconstruction_files()
    if not grids:
        return ""
    figures = "".join(
        _figure(path.read_bytes(), f"{path.name}: originals above reconstructions")
        for path in grids
    )
    return _section("Reconstructions", figures)


def _section(title: str, content: str) -> str:
    return f"<h2>{_text(title)}</h2>\n{content}"


def _table(rows: Iterable[tuple[str, Any]]) -> str:
    cells = "".join(
        f"<tr><th>{_text(key)}</th><td>{_text(_format(value))}</td></tr>" for key, value in rows
    )
    return f"<table>{cells}</table>"


def _figure(png: bytes, caption: str) -> str:
    encoded = base64.b64encode(png).decode("ascii")
    return (
        f"<figure><img src='data:image/png;base64,{encoded}' alt='{_text(caption)}'>"
        f"<figcaption>{_text(caption)}</figcaption></figure>"
    )


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.5g}"
    if isinstance(value, (list, tuple, Mapping)):
        return json.dumps(value)
    return str(value)


def _text(value: Any) -> str:
    """`value` as HTML text; a folder's bytes that are not UTF-8 as escapes, which UTF-8 holds."""
    return html.escape(printable(value), quote=True)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
