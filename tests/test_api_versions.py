"""A plugin written for API 1.0 works unchanged under 1.1: the scaffold of API 1.0, kept in
tests/v1_scaffold, passes today's kit and every command."""

from __future__ import annotations

import shutil
from pathlib import Path

from typer.testing import CliRunner

from gentool.api import API_REVISION, SUPPORTED_API_VERSIONS
from gentool.cli import app
from gentool.registry import resolve
from gentool.testing import check_plugin

runner = CliRunner()
V1_PACKAGE = Path(__file__).parent / "v1_scaffold" / "gentool_tiny_vae"


def gentool(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, (args, result.output)
    return result.output


def test_the_api_1_0_scaffold_passes_the_kit_and_every_command(tmp_path, monkeypatch, in_tmp):
    site = tmp_path / "site"
    shutil.copytree(V1_PACKAGE, site / "gentool_tiny_vae")
    info = site / "gentool_tiny_vae-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: gentool-tiny-vae\nVersion: 0.1.0\n"
    )
    (info / "entry_points.txt").write_text("[gentool.models]\ntiny-vae = gentool_tiny_vae:plugin\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("PYTHONPATH", str(site))  # the kit imports the plugin afresh
    assert API_REVISION == "1.2" and {1} == SUPPORTED_API_VERSIONS

    assert all(result.passed for result in check_plugin(resolve("tiny-vae").plugin))
    options = ["-o", "image_size=8", "-o", "hidden=16", "--limit", "16", "-b", "8"]
    gentool("train", "tiny-vae", *options, "--epochs", "1", "--device", "cpu", "--run-dir", "run")
    run = ["--run", "run"]
    gentool("sample", "tiny-vae", *run, "--n", "4", "--out", "a.png")
    gentool("encode", "tiny-vae", *run, "--out", "codes.safetensors")
    gentool("reconstruct", "tiny-vae", *run, "--n", "4")
    gentool("interpolate", "tiny-vae", *run, "--from", "a.png", "--to", "a.png", "--steps", "3")
    gentool("eval", "tiny-vae", *run, "--n", "10", "--metrics", "fid,recon")
