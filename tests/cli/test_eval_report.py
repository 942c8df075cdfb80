"""gentool train --eval-every, gentool eval and gentool report, through the command line; the
report opened in a real headless browser."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from gentool.cli import app
from gentool.jsonl import read_lines
from tests.conftest import TINY_DCGAN_ARGS

runner = CliRunner()
BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome")
REQUIRE_BROWSER = "GENTOOL_REQUIRE_BROWSER"


def invoke(*args: str):
    return runner.invoke(app, list(args))


@pytest.fixture(scope="module")
def evaluated_run(tmp_path_factory) -> tuple[Path, str]:
    """A tiny DCGAN trained two epochs with an evaluation after each, and its output."""
    folder = tmp_path_factory.mktemp("eval-run")
    cache = tmp_path_factory.mktemp("eval-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GENTOOL_CACHE", str(cache))
        result = invoke(
            "train",
            "dcgan",
            *TINY_DCGAN_ARGS,
            *("--limit", "64", "-b", "16", "--epochs", "2", "--device", "cpu"),
            *("--eval-every", "1", "--eval-n", "32", "--run-dir", str(folder / "run")),
        )
    assert result.exit_code == 0, result.output
    return folder / "run", result.output


def test_eval_every_logs_metrics_with_the_losses_and_draws_loss_png(evaluated_run):
    run, output = evaluated_run
    assert "eval after epoch 1: fid" in output and "eval after epoch 2: fid" in output
    records = read_lines(run / "metrics.jsonl")
    evals = [record for record in records if record.get("event") == "eval"]
    epochs = read_lines(run / "epochs.jsonl")
    assert [record["epoch"] for record in evals] == [1, 2]
    for key in ("fid", "kid", "precision", "recall", "diversity", "diversity_real"):
        assert isinstance(evals[-1][key], float), key
    assert "kid_std" not in evals[-1]  # 32 against 32 images: every KID subset is all of both
    assert evals[-1]["n"] == 32 and evals[-1]["features"] == "builtin"
    assert [record["epoch"] for record in epochs] == [1, 2]
    assert all(record["seconds"] > 0 for record in epochs) and epochs[-1]["diversity"] > 0
    assert sum("loss_d" in record for record in records) == 2 * 4  # 4 steps an epoch
    assert [record["step"] for record in records] == [1, 2, 3, 4, 4, 5, 6, 7, 8, 8]
    with Image.open(run / "loss.png") as image:
        assert image.format == "PNG" and image.width > 300


def test_eval_prints_a_table_appends_to_the_run_and_reuses_real_statistics(evaluated_run, in_tmp):
    run, _ = evaluated_run
    before = len(read_lines(run / "metrics.jsonl"))
    first = invoke("eval", "dcgan", "--run", str(run), "--n", "40", "--device", "cpu")
    assert first.exit_code == 0, first.output
    assert "fid" in first.output and "precision" in first.output
    assert "from the cache" not in first.output
    second = invoke("eval", "dcgan", "--run", str(run), "--n", "40", "--metrics", "fid", "--json")
    assert second.exit_code == 0, second.output
    values = json.loads(second.output)
    assert values["fid"] > 0 and "kid" not in values and values["n"] == 40
    records = read_lines(run / "metrics.jsonl")
    assert len(records) == before + 2
    assert records[-1]["event"] == "eval" and records[-1]["epoch"] == 2


def test_eval_bad_options_are_one_line_errors(evaluated_run, in_tmp, no_inception_extra):
    run, _ = evaluated_run
    cases = [
        (("--metrics", "fid,sharpness"), "unknown --metrics sharpness"),
        (("--metrics", "recon"), "does not reconstruct"),
        (("--features", "vgg"), "unknown --features 'vgg'"),
        (("--features", "inception"), 'pip install "gentool[inception]"'),
    ]
    for options, text in cases:
        result = invoke("eval", "dcgan", "--run", str(run), *options)
        assert result.exit_code == 1, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and text in lines[0], options
    autoencoder = invoke("eval", "ae", "--metrics", "fid")
    assert autoencoder.exit_code == 1 and "use --metrics recon" in autoencoder.output


def test_the_report_is_one_self_contained_file(evaluated_run, tmp_path):
    run, _ = evaluated_run
    out = tmp_path / "report.html"
    result = invoke("report", str(run), "--out", str(out))
    assert result.exit_code == 0, result.output
    page = out.read_text()
    assert page.count("<img src='data:image/png;base64,") == 3  # curves, two epoch grids
    for text in ("image_size", "builtin:faces", "epoch 2", "Timing", "fid"):
        assert text in page, text
    assert "http://" not in page and "https://" not in page


def find_browser() -> str | None:
    for name in BROWSER_NAMES:
        if path := shutil.which(name):
            return path
    return None


def test_every_image_of_the_report_loads_in_a_headless_browser(evaluated_run, tmp_path):
    browser_path = find_browser()
    missing = None
    if browser_path is None:
        missing = "no Chromium found: install it (apt-get install chromium) to run this test"
    else:
        try:
            from playwright.sync_api import sync_playwright
        except ImportError:
            missing = "playwright is not installed: pip install -e .[dev]"
    if missing:
        if os.environ.get(REQUIRE_BROWSER) == "1":
            pytest.fail(f"{REQUIRE_BROWSER}=1 and {missing}")
        pytest.skip(missing)
    run, _ = evaluated_run
    out = tmp_path / "report.html"
    assert invoke("report", str(run), "--out", str(out)).exit_code == 0
    requests = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=browser_path,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        try:
            page = browser.new_page()
            page.on("request", lambda request: requests.append(request.url))
            page.goto(out.as_uri(), wait_until="load")
            images = page.evaluate(
                "Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.alt])"
            )
        finally:
            browser.close()
    assert len(images) == 3
    for complete, width, alt in images:
        assert complete and width > 0, alt
    assert all(url.startswith(("file:", "data:")) for url in requests), requests


def test_eval_and_report_have_help_with_an_example():
    for command in ("eval", "report"):
        result = invoke(command, "--help")
        assert result.exit_code == 0 and "Example" in result.output, command


def test_a_vae_report_shows_reconstructions(in_tmp, tiny_cpu_training):
    result = invoke(
        "train",
        "vae",
        *("-o", "image_size=16", "-o", "latent_dim=4", "-o", "features=4"),
        *("--limit", "32", "-b", "16", "--epochs", "1", "--device", "cpu", "--run-dir", "run"),
    )
    assert result.exit_code == 0, result.output
    result = invoke("report", "run", "--device", "cpu")
    assert result.exit_code == 0, result.output
    page = (in_tmp / "run" / "report.html").read_text()
    assert "<h2>Reconstructions</h2>" in page
    assert page.count("<img src='data:image/png;base64,") == 3  # curves, epoch grid, recon


def test_report_on_a_folder_that_is_no_run_is_a_one_line_error(in_tmp):
    result = invoke("report", str(in_tmp))
    assert result.exit_code == 1
    assert (
        result.output.strip().startswith("error: ") and "not a gentool run folder" in result.output
    )
