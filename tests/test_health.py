"""The training health rules on made-up metrics histories."""

from __future__ import annotations

from gentool.health import (
    WINDOW,
    check_health,
    discriminator_stuck,
    diversity_collapsing,
    generator_diverging,
)


def gan_steps(loss_d: list[float], loss_g: list[float]) -> list[dict]:
    return [
        {"epoch": 1, "step": step + 1, "loss_d": d, "loss_g": g}
        for step, (d, g) in enumerate(zip(loss_d, loss_g, strict=True))
    ]


def diversity_line(epoch: int, diversity: float, real: float = 2.0) -> dict:
    return {
        "epoch": epoch,
        "step": 100 * epoch,
        "event": "epoch",
        "diversity": diversity,
        "diversity_real": real,
    }


def test_a_healthy_gan_history_raises_no_warning():
    history = gan_steps([1.2, 0.9] * WINDOW * 2, [1.0, 1.6] * WINDOW * 2)
    history += [diversity_line(1, 1.8), diversity_line(2, 1.9)]
    assert check_health(history) == []


def test_a_discriminator_loss_near_zero_is_reported_with_a_hint():
    history = gan_steps([0.8] * WINDOW + [0.01] * WINDOW, [2.0] * 2 * WINDOW)
    warning = discriminator_stuck(history)
    assert warning is not None and warning.code == "discriminator-stuck"
    assert "near zero" in warning.message and warning.hint.startswith("hint:")


def test_a_discriminator_that_recovered_is_not_reported():
    history = gan_steps([0.01] * WINDOW + [0.8] * WINDOW, [2.0] * 2 * WINDOW)
    assert discriminator_stuck(history) is None
    assert discriminator_stuck(history[: WINDOW - 1]) is None  # too short to judge


def test_a_rising_generator_loss_is_reported_and_a_high_but_steady_one_is_not():
    rising = gan_steps([0.5] * 3 * WINDOW, [1.0] * WINDOW + [3.0] * WINDOW + [9.0] * WINDOW)
    warning = generator_diverging(rising)
    assert warning is not None and "9" in warning.message
    steady = gan_steps([0.5] * 3 * WINDOW, [7.0] * 3 * WINDOW)
    assert generator_diverging(steady) is None
    modest = gan_steps([0.5] * 2 * WINDOW, [1.0] * WINDOW + [2.5] * WINDOW)
    assert generator_diverging(modest) is None


def test_falling_diversity_is_reported_and_a_slow_start_or_a_wobble_is_not():
    falling = [diversity_line(1, 1.6, real=2.0), diversity_line(2, 0.6, real=2.0)]
    warning = diversity_collapsing(falling)
    assert warning is not None and warning.code == "diversity-collapsing"
    assert "down from 1.6" in warning.message and "real images 2" in warning.message
    slow_start = [diversity_line(1, 0.05), diversity_line(2, 0.5), diversity_line(3, 0.9)]
    assert diversity_collapsing(slow_start) is None
    wobble_above_half_real = [diversity_line(1, 3.0, real=2.0), diversity_line(2, 1.5, real=2.0)]
    assert diversity_collapsing(wobble_above_half_real) is None
    without_real = [
        {"epoch": 1, "step": 1, "diversity": 3.0},
        {"epoch": 2, "step": 2, "diversity": 1.0},
    ]
    assert diversity_collapsing(without_real) is not None
    assert diversity_collapsing(falling[:1]) is None
    assert diversity_collapsing([]) is None


def test_loss_lines_without_gan_losses_raise_nothing():
    vae = [{"epoch": 1, "step": step, "loss": 0.0, "recon": 0.0} for step in range(3 * WINDOW)]
    assert check_health(vae) == []


def test_the_epoch_monitor_logs_draws_warns_once_and_keeps_the_random_state(tmp_path):
    import io
    import json

    import torch
    from rich.console import Console

    from gentool.checkpoint import RunFolder
    from gentool.data import load_dataset
    from gentool.jsonl import JsonLinesWriter
    from gentool.models import build_model
    from gentool.registry import resolve
    from gentool.training.monitor import EpochMonitor, MonitorLogs
    from tests.conftest import TINY_DCGAN

    plugin = resolve("dcgan").plugin
    config = plugin.parse_config(TINY_DCGAN)
    faces = load_dataset("builtin:faces", image_size=16, limit=16)
    model = build_model(plugin, config, faces.spec, torch.device("cpu"))
    run = RunFolder(tmp_path / "run")
    run.path.mkdir()
    stuck = gan_steps([0.01] * WINDOW, [3.0] * WINDOW)
    run.metrics_file.write_text("".join(json.dumps(line) + "\n" for line in stuck))
    output = io.StringIO()
    logs = MonitorLogs(JsonLinesWriter(run.epochs_file), JsonLinesWriter(run.metrics_file))
    monitor = EpochMonitor(plugin, config, faces, run, Console(file=output, width=300), logs)
    random_state = torch.get_rng_state()
    monitor.end_epoch(model, 1, WINDOW, seconds=1.0, last=False)
    assert not (run.path / "loss.png").exists()  # a quick epoch: drawing waits
    monitor.end_epoch(model, 2, WINDOW, seconds=1.0, last=True)
    monitor.end_epoch(model, 3, WINDOW, seconds=1.0, last=True)
    assert torch.equal(torch.get_rng_state(), random_state)  # resumed runs stay exact
    printed = output.getvalue()
    assert printed.count("warning: the discriminator's loss has stayed near zero") == 1
    assert "hint: lower the discriminator's learning rate" in printed
    assert (run.path / "loss.png").stat().st_size > 0
    lines = [json.loads(line) for line in run.epochs_file.read_text().splitlines()]
    assert [line["epoch"] for line in lines] == [1, 2, 3]
    assert all(line["seconds"] == 1.0 for line in lines)
    assert "diversity" not in lines[0] and lines[2]["diversity"] >= 0  # measured when watched
