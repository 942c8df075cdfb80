"""A VQ-VAE plugin with integer codes and an EMA codebook (tests/vqvae_plugin.py), end to end:
the kit over both its configs, int64 codes through `gentool encode`, walks refused in one line,
its codebook perplexity in `gentool eval`, its baseline sampler said, and two processes that
train it as one does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from gentool.cli import app
from gentool.registry import resolve
from gentool.testing import check_plugin
from tests.conftest import install_fake_distribution, one_line_error
from tests.test_train import checkpoint_tensors
from tests.vqvae_plugin import SOURCE

runner = CliRunner()
TRAIN = ["-b", "8", "--limit", "16", "--device", "cpu", "--seed", "3"]


@pytest.fixture
def vqvae(tmp_path, monkeypatch, in_tmp) -> dict[str, str]:
    """The plugin installed here; the environment of a process that should see it too."""
    site = tmp_path / "site"
    install_fake_distribution(
        site, monkeypatch, module="vqvae_models", source=SOURCE,
        entry_points={"vqvae": "vqvae_models:plugin"},
    )  # fmt: skip
    monkeypatch.setenv("PYTHONPATH", str(site))  # the kit imports the plugin afresh
    monkeypatch.delitem(sys.modules, "vqvae_models", raising=False)
    return {**os.environ, "PYTHONPATH": str(site), "OMP_NUM_THREADS": "1"}


def gentool(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, (args, result.output)
    return result.output


def test_the_kit_checks_both_codebooks(vqvae):
    results = check_plugin(resolve("vqvae").plugin)
    assert all(result.passed for result in results)
    checked = {result.check for result in results}
    assert "vqvae-config1: decode_gives_images" in checked
    assert "vqvae-config2: reconstruct_shape_dtype_range" in checked
    assert "vqvae-config2: sample_shape_dtype_range" not in checked  # it does not sample


def test_capabilities_follow_the_runs_config(vqvae):
    gentool("train", "vqvae", *TRAIN, "-o", "sampler=none", "--epochs", "1", "--run-dir", "run")
    line = one_line_error(runner.invoke(app, ["sample", "vqvae", "--run", "run"]))
    assert "vqvae is an autoencoder: it reconstructs images and does not sample" in line
    line = one_line_error(runner.invoke(app, ["eval", "vqvae", "--run", "run", "--n", "10"]))
    assert "vqvae does not sample new images, so fid, kid and pr do not apply" in line
    assert "perplexity" in gentool(
        "eval", "vqvae", "--run", "run", "--n", "10", "--metrics", "recon"
    )


def test_evaluations_during_training_follow_the_configs_capabilities(vqvae):
    every_epoch = ["-o", "sampler=none", "--epochs", "1", "--eval-every", "1", "--eval-n", "10"]
    trained = gentool("train", "vqvae", *TRAIN, *every_epoch, "--run-dir", "run")
    logged = [json.loads(line) for line in Path("run/metrics.jsonl").read_text().splitlines()]
    (evaluation,) = [line for line in logged if line.get("event") == "eval"]
    assert "fid" not in evaluation and "perplexity" in evaluation, trained
    asked = [*TRAIN, *every_epoch, "--eval-metrics", "fid", "--run-dir", "run-fid"]
    line = one_line_error(runner.invoke(app, ["train", "vqvae", *asked]))
    assert "vqvae does not sample new images, so fid, kid and pr do not apply" in line
    assert not Path("run-fid").exists()


def test_codes_stay_integers_and_cannot_be_walked(vqvae):
    gentool("train", "vqvae", *TRAIN, "--epochs", "1", "--run-dir", "run")
    gentool("encode", "vqvae", "--run", "run", "--out", "codes.safetensors")
    codes = load_file("codes.safetensors")["codes"]
    assert codes.dtype == torch.int64 and codes.shape == (16, 4, 4)
    gentool("sample", "vqvae", "--run", "run", "--n", "4", "--out", "image.png")
    for walk in ([], ["--from", "image.png", "--to", "image.png"]):
        line = one_line_error(runner.invoke(app, ["interpolate", "vqvae", "--run", "run", *walk]))
        assert "vqvae's codes are torch.int64 indexes (discrete codes)" in line


def test_eval_reports_the_codebook_perplexity_and_the_baseline_sampler(vqvae):
    every_epoch = ["--eval-every", "1", "--eval-n", "10", "--eval-metrics", "recon"]
    trained = gentool("train", "vqvae", *TRAIN, "--epochs", "1", "--run-dir", "run", *every_epoch)
    assert "eval after epoch 1:" in trained and "perplexity" in trained
    logged = [json.loads(line) for line in Path("run/metrics.jsonl").read_text().splitlines()]
    assert [line["perplexity"] > 1 for line in logged if line.get("event") == "eval"] == [True]
    shown = gentool("eval", "vqvae", "--run", "run", "--n", "10", "--metrics", "fid", "--json")
    assert '"perplexity"' in shown and '"sampler": "baseline"' in shown
    table = gentool("eval", "vqvae", "--run", "run", "--n", "10", "--metrics", "fid")
    assert "perplexity" in table and "samples with a baseline sampler" in table
    described = gentool("info", "vqvae")
    assert "sample (a baseline sampler)" in described and "they follow the config" in described


def test_two_processes_update_the_ema_codebook_as_one(vqvae, tmp_path, tiny_cpu_training):
    launcher = ("-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2")
    two = subprocess.run(
        [sys.executable, *launcher, "-m", "gentool", "train", "vqvae", *TRAIN, "--epochs", "2",
         "--run-dir", "two"],
        env=vqvae, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert two.returncode == 0, two.stdout[-2000:] + two.stderr[-4000:]
    gentool("train", "vqvae", *TRAIN, "--epochs", "2", "--run-dir", "one")
    one_tensors, two_tensors = checkpoint_tensors(Path("one")), checkpoint_tensors(Path("two"))
    assert {"codebook", "cluster_size", "embed_sum"} <= one_tensors.keys()
    for key, value in one_tensors.items():
        torch.testing.assert_close(two_tensors[key], value, rtol=1e-4, atol=1e-6, msg=key)
