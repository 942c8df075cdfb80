"""gentool.load and TrainedModel: the guide's examples run as written, each method matches the
command that calls it, and every input it accepts gives the same answer."""

from __future__ import annotations

import doctest
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import gentool
from gentool.cli import app
from gentool.errors import CapabilityError, DataError, GentoolError

REPO = Path(__file__).resolve().parents[1]
GUIDE = REPO / "docs" / "python-api.md"
TRAIN = ["--limit", "32", "-b", "16", "--epochs", "1", "--device", "cpu"]
RUNS = {  # the guide's runs, with narrow networks: the same shapes, trained in seconds
    "dcgan": ["-o", "image_size=32", "-o", "g_features=8", "-o", "d_features=8"],
    "cgan": ["-o", "image_size=32", "-o", "g_hidden=16,32", "-o", "d_hidden=32,16"],
    "vae": ["-o", "image_size=32", "-o", "features=4"],
}
runner = CliRunner()


def invoke(*args: str):
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A folder whose ./runs holds the guide's runs, a dcgan run kept with --ema among them, and
    a scaffolded third-party plugin installed into ./site."""
    folder = tmp_path_factory.mktemp("python-api")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        patch.setenv("GENTOOL_CACHE", str(folder / "cache"))
        for name, options in RUNS.items():
            invoke("train", name, *options, *TRAIN)
        invoke("train", "dcgan", *RUNS["dcgan"], *TRAIN, "--ema", "0.9", "--run-dir", "ema-run")
        invoke("plugin", "new", "tiny-vae", "--dir", "tiny-vae")
        installed = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
             "--no-build-isolation", "--target", "site", "./tiny-vae"],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert installed.returncode == 0, installed.stderr
        patch.syspath_prepend(str(folder / "site"))
        invoke("train", "tiny-vae", "-o", "image_size=16", "-o", "hidden=16", *TRAIN)
        yield folder


@pytest.fixture
def inside(trained, monkeypatch) -> Path:
    monkeypatch.chdir(trained)
    monkeypatch.syspath_prepend(str(trained / "site"))
    monkeypatch.setenv("GENTOOL_CACHE", str(trained / "cache"))
    return trained


def test_the_guides_examples_run_as_written(inside):
    failures, attempts = doctest.testfile(
        str(GUIDE), module_relative=False, globs={"torch": torch},
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False,
    )  # fmt: skip
    assert attempts > 35 and failures == 0


def test_import_gentool_does_not_load_torch():
    probe = "import sys, gentool; print('torch' in sys.modules, callable(gentool.load))"
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120
    )
    assert result.stdout.split() == ["False", "True"], result.stderr


def test_sample_is_what_gentool_sample_writes(inside):
    invoke("sample", "dcgan", "--n", "5", "--seed", "3", "--format", "npz", "--out", "five.npz")
    with np.load(inside / "five.npz") as written:
        from_command = torch.from_numpy(written["images"])
    from_python = gentool.load("dcgan").sample(5, seed=3, output="float")
    assert torch.equal(from_command, from_python)


def test_ema_and_raw_weights_choose_as_the_commands_do(inside):
    averaged = gentool.load("ema-run")
    assert averaged.weights == "ema" and averaged.ema is averaged
    raw = averaged.raw
    assert raw.weights == "raw" and raw.raw is raw
    assert not torch.equal(averaged.sample(4), raw.sample(4))
    assert torch.equal(gentool.load("ema-run", raw_weights=True).sample(4), raw.sample(4))
    invoke("sample", "dcgan", "--run", "ema-run", "--n", "4", "--format", "npz", "--out",
           "raw.npz", "--raw-weights")  # fmt: skip
    with np.load(inside / "raw.npz") as written:
        assert torch.equal(torch.from_numpy(written["images"]), raw.sample(4, output="float"))


def test_every_form_of_image_gives_the_same_codes(inside):
    vae = gentool.load("vae")
    pixels = vae.sample(3, seed=5)  # (3, 3, 32, 32) uint8
    expected = vae.encode(pixels)
    array = pixels.permute(0, 2, 3, 1).numpy()
    for index in range(3):
        Image.fromarray(array[index]).save(inside / f"face{index}.png")
    forms = {
        "float tensor": pixels.float() / 255,  # the VAE's range is [0, 1]
        "NumPy batch": array,
        "list of (C, H, W) tensors": list(pixels),
        "list of NumPy images": list(array),
        "list of PIL images": [Image.fromarray(image) for image in array],
        "list of paths": [inside / f"face{index}.png" for index in range(3)],
    }
    for form, images in forms.items():
        torch.testing.assert_close(vae.encode(images), expected, msg=form)


@pytest.mark.parametrize(
    ("images", "error", "message"),
    [
        (torch.zeros(2, 3, 32, 32, dtype=torch.int32), DataError, "uint8 pixels or floats"),
        (torch.full((2, 3, 32, 32), 255.0), DataError, "span [255, 255]: pass uint8 pixels"),
        (np.zeros((2, 32, 32, 1), dtype=np.uint8), DataError, "expected images of shape (N, 3,"),
        ({"images": 1}, DataError, "got dict"),
        ([], DataError, "got list"),
        ("missing.png", DataError, "image missing.png does not exist"),
    ],
)
def test_images_it_cannot_take_are_refused_in_one_line(inside, images, error, message):
    with pytest.raises(error) as caught:
        gentool.load("vae").encode(images)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_mistakes_are_gentools_own_errors(inside):
    dcgan, cgan = gentool.load("dcgan"), gentool.load("cgan")
    cases = [
        (lambda: gentool.load("runs/nothing/here"), "is not a run folder (it holds no run.json)"),
        (lambda: gentool.load("nosuchmodel"), "nosuchmodel"),
        (lambda: dcgan.sample(0), "n must be a whole number of at least 1, got 0"),
        (lambda: dcgan.sample(2, label="circle"), "dcgan is not conditional"),
        (lambda: dcgan.reconstruct(dcgan.sample(1)), "dcgan cannot reconstruct images"),
        (lambda: dcgan.sample(2, output="png"), "output must be 'uint8' or 'float'"),
        (lambda: dcgan.interpolate(steps=1), "steps must be a whole number of at least 2"),
        (lambda: dcgan.interpolate(method="cubic"), "method must be lerp or slerp"),
        (lambda: dcgan.interpolate(start=dcgan.sample(1)), "start and end go together"),
        (lambda: cgan.sample(2, labels=["circle"]), "labels has 1 entries for 2 images"),
        (lambda: cgan.sample(2, label=6), "unknown label 6"),
        (lambda: cgan.sample(2, label=0, labels=[0, 1]), "not both"),
        (lambda: dcgan.decode(torch.zeros(2, 100, dtype=torch.int64)), "codes must be a float"),
        (lambda: dcgan.decode(torch.zeros(2, 7)), "codes of shape (2, 7) do not fit dcgan"),
        (lambda: dcgan.decode(torch.full((1, 100), float("nan"))), "not finite"),
        (lambda: dcgan.sample(2, seed=2**64), "seed must be a whole number from 0 to 2**63 - 1"),
        (lambda: dcgan.sample(2, seed=-1), "seed must be a whole number"),
        (lambda: dcgan.sample(2, seed=1.5), "seed must be a whole number"),
        (lambda: dcgan.sample(10**12), "would take"),
        (lambda: dcgan.interpolate(steps=10**6, rows=10**6), "would take"),
        (lambda: gentool.load(3), "takes a run folder or a model's name"),
        (lambda: gentool.load("dcgan", device=None), "takes a run folder or a model's name"),
        (lambda: cgan.sample(3, labels=torch.tensor(1)), "one label per image"),
        (lambda: cgan.sample(3, labels="abc"), "one label per image"),
    ]
    for call, message in cases:
        with pytest.raises(GentoolError) as caught:
            call()
        assert message in str(caught.value), message
    with pytest.raises(CapabilityError, match="dcgan cannot encode images; it can sample, decode"):
        dcgan.encode(dcgan.sample(1))


def test_a_model_moves_between_devices_and_keeps_its_answers(inside):
    model = gentool.load("dcgan", device="cpu")
    assert model.to("cpu") is model and model.device == torch.device("cpu")
    if torch.cuda.is_available():
        on_gpu = model.to("cuda").sample(4, seed=0)
        assert on_gpu.device.type == "cuda"


def test_a_walk_between_images_ends_at_the_second_image(inside):
    vae = gentool.load("vae")
    faces = vae.sample(2, seed=2)
    codes = vae.encode(faces)
    walk = vae.interpolate(steps=4, start=faces[0], end=faces[1], method="lerp", output="float")
    torch.testing.assert_close(walk[0, -1], vae.decode(codes[1:], output="float")[0])
    assert walk.shape == (1, 4, 3, 32, 32)


def test_whole_numbers_of_numpy_and_torch_count_as_numbers(inside):
    dcgan, cgan = gentool.load("dcgan"), gentool.load("cgan")
    assert torch.equal(dcgan.sample(np.int64(2), seed=np.int32(4)), dcgan.sample(2, seed=4))
    assert torch.equal(cgan.sample(2, label=torch.tensor(3)), cgan.sample(2, label="cross"))


def test_a_name_means_the_newest_run_even_where_a_folder_has_it(inside):
    import shutil

    shutil.copytree(next((inside / "runs" / "vae").iterdir()), inside / "dcgan")
    try:
        assert gentool.load("dcgan").name == "dcgan"
        assert gentool.load(Path("dcgan")).name == "vae"  # a path is a folder
    finally:
        shutil.rmtree(inside / "dcgan")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Image.new("RGB", (0, 5)), "holds no picture"),
        (lambda: Image.new("La", (4, 4)), "cannot read the PIL image (La)"),
        (lambda: torch.zeros(1, 3, 32, 32, device="meta"), "dense tensors holding their values"),
        (lambda: torch.zeros(1, 3, 32, 32).to_sparse(), "dense tensors holding their values"),
    ],
)
def test_images_torch_or_pillow_cannot_read_are_one_line_errors(inside, make, message):
    with pytest.raises(DataError, match=re.escape(message)):
        gentool.load("vae").encode(make())


def test_a_list_may_mix_pixels_and_floats(inside):
    vae = gentool.load("vae")
    faces = vae.sample(2, seed=3)
    mixed = vae.encode([faces[0], faces[1].float() / 255])
    torch.testing.assert_close(mixed, vae.encode(faces))


def test_a_walk_between_images_takes_one_image_at_each_end(inside):
    vae = gentool.load("vae")
    faces = vae.sample(3, seed=3)
    with pytest.raises(GentoolError, match="start is one image; got 2"):
        vae.interpolate(start=faces[:2], end=faces[2])
    with pytest.raises(GentoolError, match="rows is for walks between random codes"):
        vae.interpolate(rows=2, start=faces[0], end=faces[1])


def test_what_a_plugin_returns_is_checked(inside, monkeypatch):
    from gentool.errors import PluginError

    vae = gentool.load("vae")
    faces = vae.sample(2, seed=3)
    monkeypatch.setattr(vae.module, "encode", lambda x: x[:1].flatten(1))
    with pytest.raises(PluginError, match="encode of 2 images returned"):
        vae.encode(faces)
    monkeypatch.setattr(vae.module, "sample", lambda n, **_: torch.full((n, 3, 32, 32), torch.nan))
    with pytest.raises(PluginError, match="vae returned images that are not finite"):
        vae.sample(2)
