"""gentool sample and gentool interpolate on trained runs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from typer.testing import CliRunner

from gentool.cli import app
from gentool.data import load_dataset, load_image, to_uint8, to_value_range
from gentool.images import image_grid
from gentool.models import load_trained
from gentool.registry import resolve
from gentool.walks import slerp
from tests.conftest import TINY_DCGAN_ARGS

runner = CliRunner()
TINY_VAE_ARGS = ["-o", "image_size=16", "-o", "latent_dim=4", "-o", "features=4"]


def invoke(*args: str):
    result = runner.invoke(app, list(args))
    return result


def train(name: str, model_args: list[str], run: str) -> None:
    result = invoke(
        "train",
        name,
        *model_args,
        "--limit",
        "32",
        "-b",
        "16",
        "--epochs",
        "1",
        "--run-dir",
        run,
        "--device",
        "cpu",
    )
    assert result.exit_code == 0, result.output


@pytest.fixture
def dcgan_run(in_tmp):
    train("dcgan", TINY_DCGAN_ARGS, "dcgan-run")
    return in_tmp / "dcgan-run"


@pytest.fixture
def vae_run(in_tmp):
    train("vae", TINY_VAE_ARGS, "vae-run")
    return in_tmp / "vae-run"


def cell(grid: np.ndarray, row: int, column: int, size: int = 16, padding: int = 2) -> np.ndarray:
    top, left = padding + row * (size + padding), padding + column * (size + padding)
    return grid[top : top + size, left : left + size]


def test_samples_as_raw_arrays(dcgan_run):
    result = invoke(
        "sample",
        "dcgan",
        "--run",
        str(dcgan_run),
        "--n",
        "5",
        "--format",
        "npz",
        "--out",
        "samples.npz",
    )
    assert result.exit_code == 0, result.output
    with np.load(dcgan_run.parent / "samples.npz") as arrays:
        assert arrays["images"].shape == (5, 3, 16, 16) and arrays["images"].dtype == np.float32
        assert arrays["images"].min() >= -1 and arrays["images"].max() <= 1
        assert arrays["value_range"].tolist() == [-1, 1] and "labels" not in arrays


def test_unconditional_models_refuse_labels(dcgan_run):
    result = invoke("sample", "dcgan", "--run", str(dcgan_run), "--label", "3")
    assert result.exit_code == 1
    assert "dcgan is not conditional: --label and --grid-by-class need" in result.output


def test_a_random_walk_grid_has_one_row_per_pair(dcgan_run):
    result = invoke(
        "interpolate",
        "dcgan",
        "--run",
        str(dcgan_run),
        "--steps",
        "5",
        "--rows",
        "3",
        "--method",
        "lerp",
    )
    assert result.exit_code == 0, result.output
    assert "wrote 3 walks of 5 steps" in result.output
    with Image.open(dcgan_run / "samples" / "interpolate_lerp_seed0.png") as grid:
        assert grid.size == (5 * 18 + 2, 3 * 18 + 2)


def test_an_image_walk_starts_and_ends_at_the_reconstructions(vae_run, in_tmp):
    invoke("data", "make", "faces", "faces", "--n", "2", "--size", "16")
    first, second = sorted((in_tmp / "faces").glob("*.png"))
    result = invoke(
        "interpolate",
        "vae",
        "--run",
        str(vae_run),
        "--from",
        str(first),
        "--to",
        str(second),
        "--steps",
        "6",
        "--out",
        "walk.png",
    )
    assert result.exit_code == 0, result.output
    grid = np.asarray(Image.open(in_tmp / "walk.png"))

    model, record, _ = load_trained(resolve("vae"), vae_run, torch.device("cpu"))
    data_spec = record.data.spec
    images = torch.stack([load_image(path, data_spec) for path in (first, second)])
    expected = to_uint8(model.reconstruct(to_value_range(images, (0.0, 1.0))), (0.0, 1.0))
    expected_cells = image_grid(expected, columns=2)
    assert np.array_equal(cell(grid, 0, 0), cell(expected_cells, 0, 0))
    assert np.array_equal(cell(grid, 0, 5), cell(expected_cells, 0, 1))
    assert not np.array_equal(cell(grid, 0, 2), cell(grid, 0, 0))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["interpolate", "vae", "--from", "a.png"], "--from and --to go together"),
        (["interpolate", "vae", "--method", "cubic"], "--method must be lerp or slerp"),
        (
            ["interpolate", "vae", "--from", "missing.png", "--to", "missing.png"],
            "image missing.png does not exist",
        ),
        (["sample", "vae", "--format", "tiff"], "--format must be png or npz"),
    ],
)
def test_bad_generation_requests(vae_run, args, message):
    result = invoke(*args, "--run", str(vae_run)) if "--run" not in args else invoke(*args)
    assert result.exit_code == 1
    assert message in result.output


def test_models_that_do_not_encode_cannot_walk_between_images(dcgan_run, in_tmp):
    result = invoke(
        "interpolate", "dcgan", "--run", str(dcgan_run), "--from", "a.png", "--to", "b.png"
    )
    assert result.exit_code == 1 and "dcgan cannot encode images" in result.output


def test_slerp_keeps_the_norm_between_orthogonal_unit_codes():
    start = torch.tensor([[1.0, 0.0]])
    end = torch.tensor([[0.0, 1.0]])
    middle = slerp(start, end, 0.5)
    torch.testing.assert_close(middle.norm(dim=1), torch.tensor([1.0]))
    torch.testing.assert_close(torch.lerp(start, end, 0.5).norm(dim=1), torch.tensor([0.5**0.5]))
    torch.testing.assert_close(
        slerp(start, start.clone(), 0.3), start
    )  # parallel: no division by 0


TINY_CGAN_ARGS = ["-o", "image_size=16", "-o", "latent_dim=8", "-o", "g_hidden=16,32",
                  "-o", "d_hidden=32,16"]  # fmt: skip


@pytest.fixture
def cgan_run(in_tmp):
    train("cgan", TINY_CGAN_ARGS, "cgan-run")
    return in_tmp / "cgan-run"


def test_conditional_models_draw_one_row_per_class_by_default(cgan_run):
    result = invoke("sample", "cgan", "--run", str(cgan_run), "--n", "12", "--format", "npz",
                    "--out", "classes.npz")  # fmt: skip
    assert result.exit_code == 0, result.output
    with np.load(cgan_run.parent / "classes.npz") as arrays:
        assert arrays["labels"].tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    grid = invoke("sample", "cgan", "--run", str(cgan_run), "--n", "12")
    assert "wrote 12 samples (2 per row)" in grid.output


def test_fewer_images_than_classes_draw_one_of_each_of_the_first_classes(cgan_run):
    result = invoke("sample", "cgan", "--run", str(cgan_run), "--n", "5", "--format", "npz",
                    "--out", "five.npz")  # fmt: skip
    assert "wrote 5 samples" in result.output, result.output
    with np.load(cgan_run.parent / "five.npz") as arrays:
        assert arrays["labels"].tolist() == [0, 1, 2, 3, 4]


def test_a_label_is_chosen_by_name_or_index(cgan_run):
    by_name = invoke("sample", "cgan", "--run", str(cgan_run), "--n", "4", "--label", "ring",
                     "--format", "npz", "--out", "ring.npz")  # fmt: skip
    assert by_name.exit_code == 0, by_name.output
    with np.load(cgan_run.parent / "ring.npz") as arrays:
        assert arrays["labels"].tolist() == [4, 4, 4, 4]  # builtin:shapes: ring is class 4
    by_index = invoke("sample", "cgan", "--run", str(cgan_run), "--n", "4", "--label", "4",
                      "--format", "npz", "--out", "four.npz")  # fmt: skip
    assert by_index.exit_code == 0
    with (
        np.load(cgan_run.parent / "ring.npz") as ring,
        np.load(cgan_run.parent / "four.npz") as four,
    ):
        assert np.array_equal(ring["images"], four["images"])
    unknown = invoke("sample", "cgan", "--run", str(cgan_run), "--label", "hexagon")
    assert unknown.exit_code == 1
    assert "unknown --label 'hexagon'; the classes are 0=circle, 1=square" in unknown.output


def test_conditional_walks_keep_one_class_per_row(cgan_run):
    result = invoke("interpolate", "cgan", "--run", str(cgan_run), "--rows", "6", "--steps", "4")
    assert result.exit_code == 0, result.output
    assert "wrote 6 walks of 4 steps" in result.output


def test_reconstructions_sit_below_their_originals(vae_run):
    result = invoke("reconstruct", "vae", "--run", str(vae_run), "--n", "10", "--out", "rec.png")
    assert result.exit_code == 0, result.output
    assert "over 10 images; originals above reconstructions in rec.png" in result.output
    error = float(result.output.split("mean squared error ")[1].split()[0])
    assert 0 < error < 1
    grid = np.asarray(Image.open(vae_run.parent / "rec.png"))
    assert grid.shape[:2] == (4 * 18 + 2, 8 * 18 + 2)  # 8 columns: 2 pairs of rows for 10 images
    first_face = load_dataset("builtin:faces", image_size=16, limit=1).images[0]
    assert np.array_equal(cell(grid, 0, 0), first_face.permute(1, 2, 0).numpy())
    assert not np.array_equal(cell(grid, 1, 0), cell(grid, 0, 0))  # its reconstruction


def test_codes_are_written_with_their_labels(in_tmp):
    train("vae", TINY_VAE_ARGS, "vae-run")
    invoke("data", "make", "shapes", "shapes", "--n", "12", "--size", "16")
    result = invoke("encode", "vae", "--run", "vae-run", "--data", "shapes", "--out",
                    "codes.safetensors")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "wrote 12 codes of shape (4) to codes.safetensors" in result.output
    with safe_open(str(in_tmp / "codes.safetensors"), "pt") as handle:
        codes, labels = handle.get_tensor("codes"), handle.get_tensor("labels")
        metadata = handle.metadata()
    assert codes.shape == (12, 4) and codes.dtype == torch.float32
    assert labels.tolist() == sorted(index % 6 for index in range(12))
    assert metadata["model"] == "vae" and "circle" in metadata["class_names"]

    model, record, _ = load_trained(resolve("vae"), in_tmp / "vae-run", torch.device("cpu"))
    first = sorted((in_tmp / "shapes" / "circle").glob("*.png"))[0]
    image = to_value_range(load_image(first, record.data.spec), (0.0, 1.0))
    torch.testing.assert_close(codes[0], model.encode(image[None])[0])


def test_autoencoders_point_from_sample_to_reconstruct(vae_run):
    from dataclasses import replace

    from gentool.api import Capabilities
    from gentool.errors import GentoolError
    from gentool.generate import sample_images
    from tests.conftest import entry_for

    vae = resolve("vae")
    autoencoder = replace(vae.plugin, capabilities=Capabilities(reconstruct=True, encode=True))
    with pytest.raises(
        GentoolError,
        match=r"vae is an autoencoder: it reconstructs images and "
        r"does not sample new ones; use `gentool reconstruct vae`",
    ):
        sample_images(entry_for(autoencoder, vae), count=4, run_dir=vae_run, out=None, seed=0,
                      device="cpu")  # fmt: skip


def test_an_autoencoder_run_reconstructs_encodes_and_refuses_to_sample(in_tmp):
    train("ae", ["-o", "image_size=8", "-o", "hidden=16", "-o", "code_dim=4"], "ae-run")
    sampled = invoke("sample", "ae", "--run", "ae-run")
    assert sampled.exit_code == 1
    assert "ae is an autoencoder: it reconstructs images and does not sample new ones; use " \
           "`gentool reconstruct ae`" in sampled.output  # fmt: skip
    rebuilt = invoke("reconstruct", "ae", "--run", "ae-run", "--n", "8")
    assert rebuilt.exit_code == 0, rebuilt.output
    assert (in_tmp / "ae-run" / "samples" / "reconstruct_n8.png").exists()
    encoded = invoke("encode", "ae", "--run", "ae-run", "--out", "codes.safetensors")
    assert encoded.exit_code == 0, encoded.output
    assert "wrote 32 codes of shape (4) to codes.safetensors" in encoded.output
    walked = invoke("interpolate", "ae", "--run", "ae-run")
    assert walked.exit_code == 1 and "walk between two images with --from and --to" in walked.output
    first, second = load_dataset("builtin:faces", image_size=8, limit=2).images
    for name, pixels in (("a.png", first), ("b.png", second)):
        Image.fromarray(pixels.permute(1, 2, 0).numpy()).save(in_tmp / name)
    between = invoke("interpolate", "ae", "--run", "ae-run", "--from", "a.png", "--to", "b.png")
    assert between.exit_code == 0, between.output  # its decode takes no labels: none are passed
