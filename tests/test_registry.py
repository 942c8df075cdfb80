from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from gentool.cli import app
from gentool.errors import PluginError
from gentool.registry import discover, resolve
from tests.conftest import install_fake_distribution, install_for_subprocess

PLUGIN_SOURCE = """
from dataclasses import replace
from gentool.plugins.dcgan import plugin as dcgan

plugin = replace(dcgan, name={name!r}, summary="a third party's GAN", api_version={api_version})
"""


def fake_plugin(tmp_path, monkeypatch, name="fakegan", api_version=1, **kwargs):
    module = f"fake_{tmp_path.name}_{name}".replace("-", "_")
    source = PLUGIN_SOURCE.format(name=name, api_version=api_version)
    install_fake_distribution(
        tmp_path / "site",
        monkeypatch,
        module=module,
        source=source,
        entry_points={kwargs.get("entry_name", name): f"{module}:plugin"},
        dist=kwargs.get("dist", "fake-models"),
    )


def test_builtin_models_register_through_entry_points():
    entry = resolve("dcgan")
    assert (entry.distribution, entry.target) == ("gentool", "gentool.plugins.dcgan:plugin")
    assert entry.plugin.name == "dcgan"


def test_a_third_party_distribution_on_sys_path_is_found(tmp_path, monkeypatch):
    fake_plugin(tmp_path, monkeypatch)
    entry = resolve("fakegan")
    assert (entry.distribution, entry.version, entry.ok) == ("fake-models", "1.2", True)
    assert entry.plugin.summary == "a third party's GAN"
    assert resolve("fake-models:fakegan") == entry


def test_a_broken_plugin_is_listed_with_its_error_and_breaks_nothing(tmp_path, monkeypatch):
    install_fake_distribution(
        tmp_path / "site",
        monkeypatch,
        module="fake_broken_plugin",
        source="import a_module_that_is_not_installed\n",
        entry_points={"broken": "fake_broken_plugin:plugin"},
    )
    entries = {entry.name: entry for entry in discover()}
    assert "ModuleNotFoundError" in entries["broken"].error
    assert entries["dcgan"].ok

    table = CliRunner().invoke(app, ["list"])
    assert table.exit_code == 0
    assert "broken" in table.output and "dcgan" in table.output
    listed = CliRunner().invoke(app, ["list", "--json"])
    statuses = {row["name"]: row["status"] for row in json.loads(listed.output)}
    assert statuses["broken"].startswith("error: ModuleNotFoundError")
    assert statuses["dcgan"] == "ok"

    with pytest.raises(PluginError, match=r"model 'broken' from fake-models 1\.2 is broken"):
        resolve("broken")
    assert resolve("dcgan").ok


def test_strict_mode_raises_the_plugin_error_itself(tmp_path, monkeypatch):
    install_fake_distribution(
        tmp_path / "site",
        monkeypatch,
        module="fake_strict_plugin",
        source="raise RuntimeError('plugin exploded')\n",
        entry_points={"exploding": "fake_strict_plugin:plugin"},
    )
    monkeypatch.setenv("GENTOOL_STRICT_PLUGINS", "1")
    with pytest.raises(RuntimeError, match="plugin exploded"):
        discover()


@pytest.mark.parametrize(
    ("api_version", "advice"), [(2, "upgrade gentool"), (0, "upgrade fake-models")]
)
def test_unsupported_api_versions_say_what_to_upgrade(tmp_path, monkeypatch, api_version, advice):
    fake_plugin(tmp_path, monkeypatch, api_version=api_version)
    entry = {entry.name: entry for entry in discover()}["fakegan"]
    assert (
        f"written for plugin API v{api_version}, this gentool supports v1: {advice}" == entry.error
    )


def test_an_entry_point_that_is_not_a_plugin_is_an_error(tmp_path, monkeypatch):
    install_fake_distribution(
        tmp_path / "site",
        monkeypatch,
        module="fake_not_a_plugin",
        source="plugin = 42\n",
        entry_points={"number": "fake_not_a_plugin:plugin"},
    )
    entry = {entry.name: entry for entry in discover()}["number"]
    assert entry.error == "entry point resolves to int, not a ModelPlugin"


def test_the_entry_point_name_must_match_the_plugin_name(tmp_path, monkeypatch):
    fake_plugin(tmp_path, monkeypatch, name="inner", entry_name="outer")
    entry = {entry.name: entry for entry in discover()}["outer"]
    assert entry.error == "entry point 'outer' resolves to a plugin named 'inner'"


def test_two_distributions_with_one_name_are_reachable_by_qualified_name(tmp_path, monkeypatch):
    fake_plugin(tmp_path, monkeypatch, name="dcgan", dist="other-gans")
    with pytest.raises(
        PluginError, match="'dcgan' is ambiguous: use gentool:dcgan or other-gans:dcgan"
    ):
        resolve("dcgan")
    assert resolve("gentool:dcgan").distribution == "gentool"
    assert resolve("other-gans:dcgan").plugin.summary == "a third party's GAN"

    result = CliRunner().invoke(app, ["list", "--json"])
    assert result.exit_code == 0
    statuses = {
        (row["distribution"], row["name"]): row["status"] for row in json.loads(result.output)
    }
    assert statuses[("other-gans", "dcgan")] == "name clash: use other-gans:dcgan"
    assert statuses[("gentool", "dcgan")] == "name clash: use gentool:dcgan"


def test_unknown_names_list_what_is_available():
    with pytest.raises(PluginError, match=r"unknown model 'nope'; available models: .*dcgan"):
        resolve("nope")


def test_load_plugins_limits_third_party_plugins(tmp_path, monkeypatch):
    fake_plugin(tmp_path, monkeypatch)
    monkeypatch.setenv("GENTOOL_LOAD_PLUGINS", "")
    names = {entry.name for entry in discover()}
    assert "fakegan" not in names and "dcgan" in names
    for allowed in ("fakegan", "fake-models", "fake_models, other"):
        monkeypatch.setenv("GENTOOL_LOAD_PLUGINS", allowed)
        assert "fakegan" in {entry.name for entry in discover()}, allowed


def test_list_never_cuts_a_model_name_in_a_narrow_terminal(tmp_path):
    name = "contractive-autoencoder-with-tied-weights"
    environment = install_for_subprocess(
        tmp_path / "site",
        module="fake_long_name_plugin",
        source=PLUGIN_SOURCE.format(name=name, api_version=1),
        entry_points={name: "fake_long_name_plugin:plugin"},
    )
    listed = subprocess.run(
        [sys.executable, "-m", "gentool", "list"], capture_output=True, text=True, timeout=300,
        env={**environment, "COLUMNS": "80"},
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    assert max(map(len, listed.stdout.splitlines())) <= 80
    for model in (name, "contractive-ae", "denoising-ae"):
        assert model in listed.stdout, model  # whole, on one line: what users type
