"""`gentool list`, `info`, `data make` and `plugin new/check`: what is installed, and making
more of it."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from gentool.cli.app import app, console, data_app, plugin_app, user_errors
from gentool.cli.options import JsonOption
from gentool.config import config_to_dict
from gentool.errors import GentoolError
from gentool.registry import PluginEntry, clashing_names, discover, resolve
from gentool.terminal import escaped


@app.command("list")
@user_errors
def list_models(
    as_json: JsonOption = False,
) -> None:
    """List installed model plugins, including broken ones with their errors.

    [dim]Example: gentool list --json[/]
    """
    entries = discover()
    clashes = clashing_names(entries)
    rows = [_entry_summary(entry, clashes) for entry in entries]
    if as_json:
        console.print_json(json.dumps(rows))
        return
    table = Table()
    # Names are what users type: never cut or wrapped; the other columns wrap around them.
    longest = max((len(row["name"]) for row in rows), default=4)
    table.add_column("name", no_wrap=True, min_width=longest)
    table.add_column("summary", ratio=3)
    table.add_column("from", ratio=1)
    table.add_column("API", no_wrap=True)
    table.add_column("capabilities", ratio=1)
    table.add_column("status", overflow="fold", ratio=1)
    for row in rows:
        status = "[green]ok[/]" if row["status"] == "ok" else f"[red]{escaped(row['status'])}[/]"
        table.add_row(
            escaped(row["name"]),
            escaped(row["summary"]),
            escaped(f"{row['distribution']} {row['version']}"),
            str(row["api_version"] or "?"),
            ", ".join(row["capabilities"]) or "train only",
            status,
        )
    console.print(table)


@app.command()
@user_errors
def info(
    name: str = typer.Argument(..., help="Model to describe."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
) -> None:
    """Describe a model: what it does, what it can do, and every config field.

    [dim]Example: gentool info dcgan[/]
    """
    entry = resolve(name)
    plugin = entry.plugin
    assert plugin is not None  # resolve() returns loaded plugins only
    fields = plugin.config_fields()
    if as_json:
        summary = _entry_summary(entry, set())
        summary["value_range"] = list(plugin.value_range)
        summary["default_batch_size"] = plugin.default_batch_size
        defaults = config_to_dict(plugin.parse_config())
        summary["config"] = [
            {
                "name": field.name,
                "type": field.type_name,
                "default": defaults[field.name],
                "accepted": field.accepted,
                "help": field.help,
            }
            for field in fields
        ]
        console.print_json(json.dumps(summary))
        return
    capabilities = ", ".join(_capability_names(entry)) or "train only"
    if plugin.capabilities_for is not None:
        capabilities += " (with the default config; they follow the config)"
    console.print(f"[bold]{escaped(plugin.name)}[/] — {escaped(plugin.summary)}", highlight=False)
    console.print(
        f"from {escaped(entry.distribution)} {escaped(entry.version)} · plugin API "
        f"v{plugin.api_version} · {capabilities} · pixels in [{plugin.value_range[0]:g}, "
        f"{plugin.value_range[1]:g}] · batch size {escaped(plugin.default_batch_size)}",
        highlight=False,
    )
    table = Table("option", "default", "accepts", "description", title="config (-o KEY=VALUE)")
    for field in fields:
        cells = (field.name, _format_value(field.default), field.accepted, field.help)
        table.add_row(*map(escaped, cells))
    console.print(table)


@data_app.command("make")
@user_errors
def data_make(
    kind: str = typer.Argument(..., help="Built-in set: faces or shapes."),
    folder: Path = typer.Argument(..., help="Folder to write PNGs into (created; must be empty)."),
    count: int = typer.Option(5000, "--n", "-n", min=1, help="Number of images."),
    size: int = typer.Option(64, "--size", min=8, max=1024, help="Side of the square images."),
) -> None:
    """Write a built-in synthetic data set as PNG files (shapes in one sub-folder per class).

    [dim]Example: gentool data make faces ./faces --n 5000 && gentool train dcgan --data ./faces[/]
    """
    from gentool.data import write_builtin_set

    written = write_builtin_set(kind, folder, count=count, size=size)
    shown = f"{written} {kind} images ({size}×{size}) to {escaped(folder)}"
    console.print(f"wrote {shown}", highlight=False)


@data_app.command("cache")
@user_errors
def data_cache(
    clear: bool = typer.Option(
        False, "--clear", help="Remove every cached data set (and nothing else in the folder)."
    ),
) -> None:
    """List the decoded data sets cached on disk, largest first, or remove them all.

    A data set is decoded once, into one file under $GENTOOL_CACHE/data (default
    ~/.cache/gentool/data) as large as its pixels, and mapped from there by every later run.

    [dim]Example: gentool data cache --clear[/]
    """
    from gentool.data.cache import cache_dir, cache_entries, clear_cache
    from gentool.limits import format_bytes

    if clear:
        removed, freed, kept = clear_cache()
        said = (
            f"removed {removed} data sets ({format_bytes(freed)}) from"
            if freed
            else "no data set is cached in"
        )
        console.print(f"{said} {escaped(cache_dir())}", highlight=False)
        if kept:
            raise GentoolError(
                f"could not remove {len(kept)} files named as cache entries (first: "
                f"{escaped(kept[0])}): remove them by hand"
            )
        return
    entries = cache_entries()
    table = Table("source", "images", "shape", "size", title=escaped(cache_dir()))
    for entry in entries:
        images, shape = (
            (str(entry.shape[0]), "×".join(map(str, entry.shape[1:]))) if entry.shape else ("", "")
        )
        table.add_row(escaped(entry.source), images, shape, format_bytes(entry.bytes))
    console.print(table)
    total = sum(entry.bytes for entry in entries)
    console.print(f"{len(entries)} data sets, {format_bytes(total)}", highlight=False)


@plugin_app.command("check")
@user_errors
def plugin_check(
    name: str = typer.Argument(..., help="Installed model to check, or DIST:NAME."),
) -> None:
    """Run the conformance kit on an installed model plugin: one row per rule of the plugin API.

    [dim]Example: gentool plugin check mymodel[/]
    """
    from gentool.testing import check_plugin

    entry = resolve(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the table shows each failure
        results = check_plugin(entry.plugin, on_fail="warn")
    table = Table("check", "rule", title=escaped(f"{entry.qualified_name} {entry.version}"))
    table.add_column("result", overflow="fold")
    for result in results:
        failure = f"[red]FAILED[/]: {escaped(result.message)}"
        table.add_row(
            result.check, result.description, "[green]passed[/]" if result.passed else failure
        )
    console.print(table)
    failed = [result.check for result in results if not result.passed]
    if failed:
        raise GentoolError(f"{len(failed)} of {len(results)} checks failed: {', '.join(failed)}")
    console.print(f"[green]all {len(results)} checks passed[/]")


@plugin_app.command("new")
@user_errors
def plugin_new(
    name: str = typer.Argument(..., help="The model's name, e.g. wgan-gp."),
    folder: Path | None = typer.Option(
        None, "--dir", help="Where to write the package (default: ./gentool-NAME)"
    ),
) -> None:
    """Write a ready plugin package: pyproject with the entry point, a small model, a kit test.

    [dim]Example: gentool plugin new wgan-gp && pip install -e ./gentool-wgan-gp[/]
    """
    from gentool.scaffold import write_plugin_package

    folder = folder or Path(f"gentool-{name}")
    for path in write_plugin_package(name, folder):
        console.print(f"  {escaped(path)}", highlight=False)
    console.print(
        f"wrote the {escaped(name)} plugin package; next: pip install -e {escaped(folder)} && "
        f"gentool plugin check {escaped(name)}",
        highlight=False,
    )


def _capability_names(entry: PluginEntry) -> list[str]:
    if entry.plugin is None:
        return []
    capabilities = entry.plugin.capabilities
    names = ("sample", "reconstruct", "encode", "conditional")
    shown = [name for name in names if getattr(capabilities, name)]
    if capabilities.sample and capabilities.baseline_sampler:
        shown[0] = "sample (a baseline sampler)"
    return shown


def _entry_summary(entry: PluginEntry, clashes: set[str]) -> dict[str, Any]:
    if not entry.ok:
        status = f"error: {entry.error}"
    elif entry.name in clashes:
        status = f"name clash: use {entry.qualified_name}"
    else:
        status = "ok"
    return {
        "name": entry.name,
        "summary": entry.plugin.summary if entry.plugin else "",
        "distribution": entry.distribution,
        "version": entry.version,
        "api_version": entry.plugin.api_version if entry.plugin else None,
        "capabilities": _capability_names(entry),
        "status": status,
    }


def _format_value(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(str(item) for item in value)
    return str(value)
