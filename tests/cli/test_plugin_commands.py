"""gentool plugin new / check: a third party's first hour, end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file
from typer.testing import CliRunner

from gentool.cli import app
from gentool.plugins.dcgan import plugin as dcgan
from gentool.plugins.vae import plugin as vae
from gentool.testing import checks_for
from tests.conftest import install_fake_distribution

runner = CliRunner()


def run(*args: str, site, cwd) -> subprocess.CompletedProcess:
    """A command in a fresh interpreter that sees the packages installed into `site`."""
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300
    )


def install(package: Path, site: Path) -> None:
    """pip install a package into a folder of its own, as a user's environment would hold it."""
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(site), str(package)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


def test_a_scaffolded_plugin_installs_lists_passes_its_kit_and_trains(tmp_path):
    made = runner.invoke(app, ["plugin", "new", "tiny-vae", "--dir", str(tmp_path / "package")])
    assert made.exit_code == 0, made.output
    site = tmp_path / "site"
    install(tmp_path / "package", site)

    listed = run("-m", "gentool", "list", "--json", site=site, cwd=tmp_path)
    rows = {row["name"]: row for row in json.loads(listed.stdout)}
    assert rows["tiny-vae"]["distribution"] == "gentool-tiny-vae"
    assert rows["tiny-vae"]["status"] == "ok"

    own_tests = run("-m", "pytest", "-q", "-p", "no:cacheprovider", site=site,
                    cwd=tmp_path / "package")  # fmt: skip
    assert own_tests.returncode == 0, own_tests.stdout[-2000:]
    assert f"{len(checks_for(vae))} passed" in own_tests.stdout  # the kit, one test per check

    trained = run("-m", "gentool", "train", "tiny-vae", "-o", "image_size=8", "-o", "hidden=16",
                  "--limit", "32", "-b", "8", "--epochs", "1", "--device", "cpu",
                  site=site, cwd=tmp_path)  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    assert "done: 1 epoch of tiny-vae" in trained.stdout


def test_the_example_third_party_plugin_installs_and_trains(tmp_path):
    example = Path(__file__).resolve().parents[2] / "examples" / "gentool-wgan-gp"
    site = tmp_path / "site"
    install(example, site)
    trained = run("-m", "gentool", "train", "wgan-gp", "-o", "image_size=16", "-o", "g_features=8",
                  "-o", "d_features=8", "-o", "critic_steps=2", "--limit", "32", "-b", "16",
                  "--epochs", "1", "--device", "cpu", site=site, cwd=tmp_path)  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    assert "done: 1 epoch of wgan-gp" in trained.stdout
    own_tests = run("-m", "pytest", "-q", "-p", "no:cacheprovider", str(example / "tests"),
                    site=site, cwd=tmp_path)  # fmt: skip
    assert own_tests.returncode == 0, own_tests.stdout[-2000:]


def test_the_conditional_vae_example_trains_and_generates_by_class(tmp_path):
    example = Path(__file__).resolve().parents[2] / "examples" / "gentool-cvae"
    site = tmp_path / "site"
    install(example, site)
    made = run("-m", "gentool", "data", "make", "shapes", "shapes", "--n", "24", "--size", "8",
               site=site, cwd=tmp_path)  # fmt: skip
    assert made.returncode == 0, made.stderr
    script = CVAE_SESSION.format(options=["-o", "image_size=8", "-o", "hidden=16"])
    session = run("-c", script, site=site, cwd=tmp_path)
    assert session.returncode == 0, session.stdout + session.stderr
    codes = load_file(tmp_path / "codes.safetensors")
    assert codes["codes"].shape == (24, 16) and codes["labels"].shape == (24,)
    own_tests = run("-m", "pytest", "-q", "-p", "no:cacheprovider", str(example / "tests"),
                    site=site, cwd=tmp_path)  # fmt: skip
    assert own_tests.returncode == 0, own_tests.stdout[-2000:]


# The commands of the example's README in one interpreter (each alone would load torch again).
CVAE_SESSION = """
import glob
from typer.testing import CliRunner
from gentool.cli import app

def gentool(*args):
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, (args, result.output)
    return result.output

options = {options}
gentool("train", "cvae", "--data", "shapes", *options, "-b", "8", "--epochs", "1",
        "--device", "cpu", "--run-dir", "run")
written = gentool("sample", "cvae", "--run", "run", "--label", "circle", "--n", "16")
assert "16 samples (4 per row)" in written, written
gentool("encode", "cvae", "--run", "run", "--data", "shapes", "--out", "codes.safetensors")
gentool("reconstruct", "cvae", "--run", "run", "--data", "shapes", "--n", "8")
gentool("interpolate", "cvae", "--run", "run", "--label", "square", "--rows", "2")
circle, square = (sorted(glob.glob(f"shapes/{{name}}/*.png"))[0] for name in ("circle", "square"))
gentool("interpolate", "cvae", "--run", "run", "--from", circle, "--to", square, "--out", "w.png")
"""


def test_plugin_check_shows_every_check_of_a_built_in_model():
    result = runner.invoke(app, ["plugin", "check", "vae"])
    assert result.exit_code == 0, result.output
    assert f"all {len(checks_for(vae))} checks passed" in result.output


def test_plugin_check_fails_with_the_broken_rule(tmp_path, monkeypatch):
    install_fake_distribution(
        tmp_path / "site", monkeypatch, module="heavy_module",
        source="""
            import torch
            from dataclasses import replace
            from gentool.plugins.dcgan import plugin as dcgan

            plugin = replace(dcgan, name="heavy")
        """,
        entry_points={"heavy": "heavy_module:plugin"},
    )  # fmt: skip
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "site"))
    result = runner.invoke(app, ["plugin", "check", "heavy"])
    assert result.exit_code == 1
    assert "FAILED" in result.output
    failed = f"error: 1 of {len(checks_for(dcgan))} checks failed: import_leaves_torch_unloaded"
    assert failed in result.output


@pytest.mark.parametrize(
    ("name", "message"),
    [("Bad_Name", "must be lowercase letters and digits"), ("9lives", "starting with a letter")],
)
def test_plugin_names_are_checked(tmp_path, name, message):
    result = runner.invoke(app, ["plugin", "new", name, "--dir", str(tmp_path / "x")])
    assert result.exit_code == 1 and message in result.output


def test_plugin_new_never_writes_into_a_folder_in_use(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    result = runner.invoke(app, ["plugin", "new", "fresh", "--dir", str(tmp_path)])
    assert result.exit_code == 1 and "is not empty" in result.output
    assert [path.name for path in tmp_path.iterdir()] == ["keep.txt"]
