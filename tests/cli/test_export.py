"""gentool export: files that run without gentool, checked against the model, or one-line errors."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from gentool.api import Capabilities, DataSpec
from gentool.cli import app
from gentool.errors import GentoolError
from gentool.models import load_trained
from gentool.registry import resolve
from tests.cli.test_generate import TINY_CGAN_ARGS, TINY_VAE_ARGS
from tests.conftest import TINY_DCGAN_ARGS, install_fake_distribution, one_line_error

runner = CliRunner()
FORMATS = ("onnx", "exported", "torchscript")
TRAINING = ["--limit", "32", "-b", "16", "--epochs", "1", "--device", "cpu"]
MODEL_ARGS = {"dcgan": TINY_DCGAN_ARGS, "vae": TINY_VAE_ARGS, "cgan": TINY_CGAN_ARGS}
# What each model exports: its decoder in every format, and the VAE's encoder too.
EXPORTS = {
    "dcgan": [("decoder", export_format) for export_format in FORMATS],
    "vae": [*(("decoder", export_format) for export_format in FORMATS), ("encoder", "onnx")],
    "cgan": [("decoder", export_format) for export_format in FORMATS],
}
BATCH = 5  # neither the traced batch nor the checked one
CHECKED = re.compile(r"max \|difference\| (\S+) \(tolerance (\S+)\)")

# Loads each file with torch or onnxruntime alone, as its description says, and runs it on the
# named arrays; the outputs go to an .npz. gentool must not be imported on the way.
RUN_WITHOUT_GENTOOL = """
import json, sys
import numpy as np
import torch

arrays = np.load(sys.argv[1])
outputs = {}
for path in sys.argv[3:]:
    with open(path + ".json") as file:
        description = json.load(file)
    names = [tensor["name"] for tensor in description["inputs"]]
    if description["format"] == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        output = session.run(None, {name: arrays[name] for name in names})[0]
    else:
        inputs = [torch.from_numpy(arrays[name]) for name in names]
        if description["format"] == "exported":
            network = torch.export.load(path).module()
        else:
            network = torch.jit.load(path)
        output = network(*inputs).detach().numpy()
    outputs[path] = output
np.savez(sys.argv[2], **outputs)
assert "gentool" not in sys.modules, sorted(name for name in sys.modules if "gentool" in name)
"""


def invoke(*args: str):
    return runner.invoke(app, list(args))


def train(name: str, model_args: list[str], run) -> None:
    result = invoke("train", name, *model_args, *TRAINING, "--run-dir", str(run))
    assert result.exit_code == 0, result.output


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny trained run of dcgan, vae and cgan, shared by this module's tests."""
    folder = tmp_path_factory.mktemp("runs")
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("GENTOOL_CACHE", str(tmp_path_factory.mktemp("cache")))
        for name, model_args in MODEL_ARGS.items():
            train(name, model_args, folder / name)
    return folder


def export(name: str, run, *args: str):
    return invoke("export", name, "--run", str(run), *args)


def model_inputs(name: str, run) -> dict[str, np.ndarray]:
    """Inputs of every part of `name`'s model, by the names its files give them."""
    model, record, _ = load_trained(resolve(name), run, torch.device("cpu"))
    spec = record.data.spec
    generator = torch.Generator().manual_seed(7)
    inputs = {
        "latent": model.sample_latent(BATCH, generator=generator),
        "images": torch.rand(BATCH, spec.channels, spec.height, spec.width, generator=generator),
    }
    if name == "cgan":
        inputs["labels"] = torch.tensor([5, 0, 3, 1, 2])
    return {key: value.numpy() for key, value in inputs.items()}


def model_outputs(name: str, run, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    model, _, _ = load_trained(resolve(name), run, torch.device("cpu"))
    tensors = {key: torch.from_numpy(value) for key, value in inputs.items()}
    labels = {"labels": tensors["labels"]} if "labels" in tensors else {}
    outputs = {"decoder": model.decode(tensors["latent"], **labels)}
    if hasattr(model, "encode"):
        outputs["encoder"] = model.encode(tensors["images"])
    return {part: output.numpy() for part, output in outputs.items()}


@pytest.mark.parametrize("name", EXPORTS)
def test_each_export_runs_without_gentool_and_matches_the_model(runs, tmp_path, name):
    tolerances = {}
    for part, export_format in EXPORTS[name]:
        path = tmp_path / f"{part}.{export_format}"
        result = export(name, runs / name, "--format", export_format, "--part", part,
                        "--out", str(path))  # fmt: skip
        assert result.exit_code == 0, result.output
        assert f"wrote {name}'s {part} as {export_format} to {path}" in result.output
        difference, tolerance = map(float, CHECKED.search(result.output).groups())
        assert tolerance == 1e-4 and difference <= tolerance
        description = json.loads(path.with_name(path.name + ".json").read_text())
        assert description["check"]["max_abs_difference"] <= tolerance
        tolerances[str(path)] = (part, tolerance)

    inputs = model_inputs(name, runs / name)
    np.savez(tmp_path / "inputs.npz", **inputs)
    ran = subprocess.run(
        [sys.executable, "-c", RUN_WITHOUT_GENTOOL, str(tmp_path / "inputs.npz"),
         str(tmp_path / "outputs.npz"), *tolerances],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    expected = model_outputs(name, runs / name, inputs)
    with np.load(tmp_path / "outputs.npz") as outputs:
        for path, (part, tolerance) in tolerances.items():
            assert outputs[path].shape == expected[part].shape, path
            assert np.abs(outputs[path] - expected[part]).max() <= tolerance, path


def test_the_description_says_what_goes_in_and_comes_out(runs, tmp_path):
    path = tmp_path / "generator.onnx"
    result = export("cgan", runs / "cgan", "--format", "onnx", "--out", str(path))
    assert result.exit_code == 0, result.output
    assert "inputs latent (batch, 8) float32, labels (batch) int64; output images (batch, 3, " \
           "16, 16) float32 in [-1, 1]" in result.output  # fmt: skip
    description = json.loads((tmp_path / "generator.onnx.json").read_text())
    assert description["inputs"] == [
        {"name": "latent", "shape": ["batch", 8], "dtype": "float32",
         "distribution": "standard normal"},
        {"name": "labels", "shape": ["batch"], "dtype": "int64",
         "values": "class indexes from 0 to 5 into class_names"},
    ]  # fmt: skip
    assert description["output"] == {
        "name": "images", "shape": ["batch", 3, 16, 16], "dtype": "float32",
        "value_range": [-1.0, 1.0],
    }  # fmt: skip
    assert description["class_names"][:2] == ["circle", "square"]
    assert description["model"] == "cgan" and description["part"] == "decoder"
    assert description["format"] == "onnx" and description["file"] == "generator.onnx"
    assert description["trained"] == {
        "run": str((runs / "cgan").resolve()), "epoch": 1, "step": 2, "weights": "raw",
    }  # fmt: skip
    assert description["check"]["runtime"].startswith("onnxruntime ")
    assert description["versions"]["torch"] == torch.__version__


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
def test_an_ema_run_exports_its_averaged_weights_unless_asked_for_the_trained_ones(tmp_path):
    run = tmp_path / "ema-run"
    train("dcgan", [*TINY_DCGAN_ARGS, "--ema", "0.5"], run)
    latent = torch.randn(BATCH, 8, generator=torch.Generator().manual_seed(3))
    for flags, weights, averaged in [([], "ema", True), (["--raw-weights"], "raw", False)]:
        path = tmp_path / f"{weights}.pt"
        result = export("dcgan", run, "--format", "torchscript", "--out", str(path), *flags)
        assert result.exit_code == 0, result.output
        description = json.loads(path.with_name(path.name + ".json").read_text())
        assert description["trained"]["weights"] == weights
        model, _, _ = load_trained(resolve("dcgan"), run, torch.device("cpu"), averaged=averaged)
        torch.testing.assert_close(torch.jit.load(path)(latent), model.decode(latent))
    assert not torch.equal(torch.jit.load(tmp_path / "ema.pt")(latent),
                           torch.jit.load(tmp_path / "raw.pt")(latent))  # fmt: skip


def test_an_autoencoders_decoder_takes_codes_shaped_as_its_encoder_gives_them(tmp_path):
    run = tmp_path / "ae-run"
    train("ae", ["-o", "image_size=8", "-o", "hidden=16", "-o", "code_dim=4"], run)
    path = tmp_path / "decoder.pt2"
    result = export("ae", run, "--format", "exported", "--out", str(path))
    assert result.exit_code == 0, result.output
    description = json.loads((tmp_path / "decoder.pt2.json").read_text())
    assert description["inputs"] == [{
        "name": "latent", "shape": ["batch", 4], "dtype": "float32",
        "distribution": "codes of images from the encoder (--part encoder)",
    }]  # fmt: skip
    assert description["output"]["shape"] == ["batch", 3, 8, 8]


def test_without_onnxruntime_the_onnx_file_is_checked_by_onnx_alone(runs, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime fails
    path = tmp_path / "generator.onnx"
    result = export("dcgan", runs / "dcgan", "--format", "onnx", "--out", str(path))
    assert result.exit_code == 0, result.output
    assert "checked with onnx.checker (onnx " in result.output
    assert 'only: onnxruntime is not installed (pip install "gentool[export]"), so the ' \
           "outputs were not compared" in result.output  # fmt: skip
    check = json.loads((tmp_path / "generator.onnx.json").read_text())["check"]
    assert check["max_abs_difference"] is None and "not installed" in check["not_run"]


def test_a_file_that_differs_from_the_model_is_an_error_and_not_written(
    runs, tmp_path, monkeypatch
):
    from gentool import export as export_module

    run_serialized = export_module._run_serialized

    def off_by_a_hundredth(*args):
        output, runtime = run_serialized(*args)
        return output + 0.01, runtime

    monkeypatch.setattr(export_module, "_run_serialized", off_by_a_hundredth)
    path = tmp_path / "generator.pt"
    path.write_bytes(b"an earlier export")
    result = export("dcgan", runs / "dcgan", "--format", "torchscript", "--out", str(path))
    assert one_line_error(result) == (
        "error: cannot export dcgan's decoder to torchscript: the file's output differs from "
        "the model's by up to 1.0e-02 on a batch of 3, over the tolerance 1.0e-04"
    )
    assert path.read_bytes() == b"an earlier export"
    assert sorted(item.name for item in tmp_path.iterdir()) == ["generator.pt"]


BRANCHY = """
from dataclasses import replace

from gentool.plugins.dcgan import plugin as dcgan


def build_branchy(config, spec):
    from gentool.plugins.dcgan.model import DCGAN

    class Branchy(DCGAN):
        def decode(self, z, *, labels=None):
            if z.sum() > 0:  # a Python branch on the values
                return super().decode(z)
            return super().decode(-z)

    return Branchy(config, spec)


branchy = replace(dcgan, name="branchy", build=build_branchy)
"""


def test_a_decoder_that_branches_on_values_is_refused_by_every_exporter(
    tmp_path, monkeypatch, in_tmp
):
    install_fake_distribution(
        tmp_path / "site", monkeypatch, module="branchy", source=BRANCHY,
        entry_points={"branchy": "branchy:branchy"},
    )  # fmt: skip
    train("branchy", TINY_DCGAN_ARGS, in_tmp / "run")
    branch = BRANCHY.splitlines().index(
        "            if z.sum() > 0:  # a Python branch on the values"
    )
    reasons = {
        "onnx": "GuardOnDataDependentSymNode: Could not guard on data-dependent expression",
        "exported": "GuardOnDataDependentSymNode: Could not guard on data-dependent expression",
        "torchscript": "TracerWarning: Converting a tensor to a Python boolean might cause",
    }
    for export_format, reason in reasons.items():
        out = in_tmp / "exports" / f"decoder.{export_format}"
        result = export("branchy", in_tmp / "run", "--format", export_format, "--out", str(out))
        error = one_line_error(result)
        assert error.startswith(f"error: cannot export branchy's decoder to {export_format}: ")
        assert reason in error
        where = f"site/branchy.py:{branch + 1}"  # shown from the working folder
        assert f"(at {where}); GENTOOL_STRICT_PLUGINS=1 shows" in error
        assert not (in_tmp / "exports").exists()
    separate = subprocess.run(  # what torch.export prints to the terminal itself stays off it
        [sys.executable, "-m", "gentool", "export", "branchy", "--run", "run", "--format",
         "exported", "--out", "decoder.pt2"],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONPATH": str(tmp_path / "site")},
    )  # fmt: skip
    assert separate.returncode == 1 and separate.stdout == ""
    assert separate.stderr.count("\n") == 1, separate.stderr
    assert separate.stderr.startswith("error: cannot export branchy's decoder to exported: ")
    monkeypatch.setenv("GENTOOL_STRICT_PLUGINS", "1")  # the exporter's own exception, whole
    result = export("branchy", in_tmp / "run", "--format", "exported", "--out", "decoder.pt2")
    assert type(result.exception).__name__ == "GuardOnDataDependentSymNode"
    assert not (in_tmp / "decoder.pt2").exists()


def test_a_file_that_fails_on_another_batch_is_an_error_and_not_written(
    runs, tmp_path, monkeypatch
):
    load = torch.jit.load

    def load_as_if_traced_with_a_fixed_batch(file):
        network = load(file)

        def run(latent):
            if latent.shape[0] != 2:
                raise RuntimeError("shape '[2, 8, 1, 1]' is invalid for input of size 24")
            return network(latent)

        return run

    monkeypatch.setattr(torch.jit, "load", load_as_if_traced_with_a_fixed_batch)
    path = tmp_path / "generator.pt"
    result = export("dcgan", runs / "dcgan", "--format", "torchscript", "--out", str(path))
    assert one_line_error(result).startswith(
        "error: cannot export dcgan's decoder to torchscript: the file fails on a batch of 3: "
        "RuntimeError: shape '[2, 8, 1, 1]' is invalid for input of size 24"
    )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("missing", ["onnx", "onnxscript"])
def test_onnx_without_its_extra_says_how_to_install_it(runs, tmp_path, monkeypatch, missing):
    monkeypatch.setitem(sys.modules, missing, None)  # import fails as if not installed
    result = export("dcgan", runs / "dcgan", "--format", "onnx", "--out", str(tmp_path / "g"))
    assert one_line_error(result) == (
        f'error: --format onnx needs {missing}, not installed here: pip install "gentool[export]"'
    )
    assert list(tmp_path.iterdir()) == []


def test_the_command_explains_itself():
    result = invoke("export", "--help")
    assert result.exit_code == 0
    text = " ".join(textwrap.dedent(result.output).split())
    assert "gentool export dcgan --format onnx --out generator.onnx" in text


def test_a_model_whose_decoder_cannot_be_exported_says_what_it_has():
    from gentool.export import _plan

    dcgan = resolve("dcgan").plugin
    spec = DataSpec(channels=3, height=16, width=16)
    with pytest.raises(GentoolError, match=r"^dcgan has no decode\(codes\) method, so it has no "
                       r"decoder to export$"):  # fmt: skip
        _plan(dcgan, nn.Identity(), spec, "decoder")
    encoder_only = replace(dcgan, capabilities=Capabilities(reconstruct=True, encode=True))
    with pytest.raises(GentoolError, match=r"decoder to export; its encoder can be \(--part "):
        _plan(encoder_only, nn.Identity(), spec, "decoder")

    class DecodeOnly(nn.Module):
        def decode(self, z, *, labels=None):
            return z

    unknown_codes = r"dcgan has neither sample_latent\(n\) nor encode\(images\), so the codes"
    with pytest.raises(GentoolError, match=unknown_codes):
        _plan(dcgan, DecodeOnly(), spec, "decoder")


def test_a_description_that_cannot_be_written_leaves_the_file_as_it_was(runs, tmp_path):
    path = tmp_path / "generator.pt"
    path.write_bytes(b"an earlier export")
    (tmp_path / "generator.pt.json").mkdir()  # where the description would go
    result = export("dcgan", runs / "dcgan", "--format", "torchscript", "--out", str(path))
    assert "generator.pt.json is not a regular file: name a file" in one_line_error(result)
    assert path.read_bytes() == b"an earlier export"
