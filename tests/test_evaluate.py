"""Evaluation of runs: the cache of real statistics, reconstruction metrics, and a DCGAN that
learns measurably."""

from __future__ import annotations

import json
import math

import torch
from PIL import Image
from typer.testing import CliRunner

from gentool.cli import app
from gentool.data import load_dataset
from gentool.evaluate import (
    EvalSettings,
    evaluate_run,
    measure,
    real_statistics,
    statistics_key,
    stats_dir,
)
from gentool.features import FeatureExtractor
from gentool.models import build_model
from gentool.registry import resolve
from tests.conftest import TINY_DCGAN

runner = CliRunner()


def channel_means() -> FeatureExtractor:
    """A stand-in extractor: the mean of each channel."""
    return FeatureExtractor(
        "means", '{"name": "means"}', 3, lambda images: images.float().mean(dim=(2, 3))
    )


def test_real_statistics_are_cached_and_keyed_by_data_and_extractor():
    faces = load_dataset("builtin:faces", image_size=16, limit=40)
    extractor = channel_means()
    first, hit = real_statistics(faces, extractor)
    assert not hit
    again, hit = real_statistics(faces, extractor)
    assert hit
    assert torch.equal(first.features, again.features)
    assert torch.equal(first.gaussian.covariance, again.gaussian.covariance)
    described = json.loads(next(stats_dir().glob("*.json")).read_text())
    assert described["fingerprint"] == faces.fingerprint and described["count"] == 40

    more_faces = load_dataset("builtin:faces", image_size=16, limit=41)
    shapes = load_dataset("builtin:shapes", image_size=16, limit=40)
    other_extractor = FeatureExtractor(
        "means", '{"name": "means", "weights": "retrained"}', 3, extractor.extract
    )
    for dataset, features in (
        (more_faces, extractor),
        (shapes, extractor),
        (faces, other_extractor),
    ):
        assert statistics_key(dataset, features) != statistics_key(faces, extractor)
        assert real_statistics(dataset, features)[1] is False


def test_a_damaged_cache_entry_is_recomputed():
    faces = load_dataset("builtin:faces", image_size=16, limit=20)
    extractor = channel_means()
    real_statistics(faces, extractor)
    entry = stats_dir() / f"{statistics_key(faces, extractor)}.safetensors"
    entry.write_bytes(b"not safetensors")
    statistics, hit = real_statistics(faces, extractor)
    assert not hit and statistics.features.shape == (20, 3)


def test_statistics_copied_under_another_key_are_recomputed():
    extractor = channel_means()
    faces = load_dataset("builtin:faces", image_size=16, limit=20)
    shapes = load_dataset("builtin:shapes", image_size=16, limit=20)
    real_statistics(faces, extractor)
    real_statistics(shapes, extractor)
    faces_entry, shapes_entry = (
        stats_dir() / f"{statistics_key(dataset, extractor)}.safetensors"
        for dataset in (faces, shapes)
    )
    shapes_entry.write_bytes(faces_entry.read_bytes())
    statistics, hit = real_statistics(shapes, extractor)
    assert not hit
    assert torch.allclose(statistics.features, extractor(shapes.images))


def train_tiny(name: str, run: str, *extra: str) -> None:
    result = runner.invoke(app, ["train", name, "--run-dir", run, "--device", "cpu", *extra])
    assert result.exit_code == 0, result.output


def test_a_briefly_trained_dcgan_beats_its_initialisation(in_tmp, tiny_cpu_training):
    entry = resolve("dcgan")
    config = {**TINY_DCGAN, "image_size": 32, "latent_dim": 16, "g_features": 16, "d_features": 16}
    settings = EvalSettings(("fid",), n=256)
    model_args = [arg for key, value in config.items() for arg in ("-o", f"{key}={value}")]
    train_tiny("dcgan", "run", *model_args, "--limit", "1024", "-b", "32", "--epochs", "3")

    torch.manual_seed(0)  # the trainer's seed: the same weights the run started from
    faces = load_dataset("builtin:faces", image_size=32, limit=2)
    untrained = build_model(entry.plugin, entry.plugin.parse_config(config), faces.spec, "cpu")
    at_start = measure(
        untrained,
        entry.plugin,
        faces.spec,
        source="builtin:faces",
        image_size=32,
        settings=settings,
        held_out_from=None,
    ).values["fid"]
    trained = evaluate_run(
        entry, run_dir=in_tmp / "run", data=None, settings=settings, device="cpu"
    )
    assert trained.cache_hit  # the same 256 real faces as for the untrained model
    assert trained.values["fid"] < 0.75 * at_start, (trained.values["fid"], at_start)


def test_a_vae_is_measured_on_held_out_faces(in_tmp, tiny_cpu_training):
    train_tiny(
        "vae",
        "run",
        *("-o", "image_size=16", "-o", "latent_dim=4", "-o", "features=4"),
        *("--limit", "64", "-b", "16", "--epochs", "1"),
    )
    result = evaluate_run(
        resolve("vae"),
        run_dir=in_tmp / "run",
        data=None,
        settings=EvalSettings(("fid", "recon"), n=32),
        device="cpu",
    )
    values = result.values
    assert values["held_out"] is True
    assert 0 < values["mse"] < 1 and 0 < values["ssim"] <= 1
    # PSNR averages over images, so it is at least the PSNR of the mean error (Jensen).
    assert values["psnr"] >= 10 * math.log10(1 / values["mse"]) - 1e-9
    assert values["fid"] > 0
    lines = (in_tmp / "run" / "metrics.jsonl").read_text().splitlines()
    assert json.loads(lines[-1])["event"] == "eval"


def test_an_evaluation_larger_than_memory_is_one_line_before_it_draws(in_tmp, tiny_cpu_training):
    config = [arg for key, value in TINY_DCGAN.items() for arg in ("-o", f"{key}={value}")]
    train_tiny("dcgan", "run", *config, "--limit", "32", "-b", "16", "--epochs", "1")
    folder = in_tmp / "few"
    folder.mkdir()
    for index in range(12):
        Image.new("RGB", (16, 16), (index * 20, 0, 0)).save(folder / f"{index}.png")
    result = runner.invoke(
        app, ["eval", "dcgan", "--run", "run", "--data", "few", "--n", "10000000000"]
    )
    assert result.exit_code == 1, result.output
    assert "would take" in result.output and "lower --n" in result.output
    assert "Traceback" not in result.output
