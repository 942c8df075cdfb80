from __future__ import annotations

import io
import json
import os
import signal
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import torch
from rich.console import Console
from safetensors.torch import load_file
from torch import nn

from gentool.api import DataSpec, ModelPlugin, Phase, option
from gentool.checkpoint import RunFolder
from gentool.errors import DataError, GentoolError, Interrupted, TrainingError
from gentool.plugins.dcgan.model import DCGAN
from gentool.training import TrainRequest, run_training
from gentool.training.step import phase_at
from tests.conftest import TINY_DCGAN, entry_for

STEPS_PER_EPOCH = 3  # 48 images in batches of 16


def train(
    entry, run_dir: Path, *, epochs: int, resume: bool = False, config=TINY_DCGAN, **overrides
):
    request = TrainRequest(
        entry=entry,
        config_values={} if resume else config,
        limit=None if resume else 48,
        batch_size=None if resume else 16,
        epochs=epochs,
        run_dir=run_dir,
        resume=resume,
        device="cpu",
        **overrides,
    )
    return run_training(request, Console(file=io.StringIO()))


def checkpoint_tensors(run_dir: Path) -> dict[str, torch.Tensor]:
    run = RunFolder(run_dir)
    record = run.read()
    folder = run_dir / record.checkpoint
    return {
        **load_file(folder / "model.safetensors"),
        **{f"optim/{k}": v for k, v in load_file(folder / "optim.safetensors").items()},
    }


def logged_losses(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def assert_same_run(expected: Path, actual: Path) -> None:
    want, got = checkpoint_tensors(expected), checkpoint_tensors(actual)
    assert want.keys() == got.keys()
    different = [key for key in want if not torch.equal(want[key], got[key])]
    assert different == []
    assert logged_losses(expected) == logged_losses(actual)
    assert RunFolder(expected).read().progress == RunFolder(actual).read().progress


def interrupting(entry, at_step: int):
    """The tiny DCGAN, sending itself SIGINT during one step, as a user's Ctrl-C would."""

    class InterruptedDCGAN(DCGAN):
        def training_step(self, batch, ctx):
            if ctx.global_step == at_step:
                os.kill(os.getpid(), signal.SIGINT)
            return super().training_step(batch, ctx)

    plugin = replace(entry.plugin, build=lambda config, spec: InterruptedDCGAN(config, spec))
    return entry_for(plugin, entry)


def test_a_run_folder_has_checkpoint_samples_and_metrics(dcgan_entry, tmp_path):
    summary, run = train(dcgan_entry, tmp_path / "run", epochs=2)
    assert (summary.epochs_done, summary.steps) == (2, 2 * STEPS_PER_EPOCH)
    record = run.read(expected_plugin="dcgan")
    assert record.checkpoint == "checkpoint-00000006"
    assert record.config["image_size"] == 16 and record.data.count == 48
    assert sorted(path.name for path in run.path.iterdir()) == [
        "checkpoint-00000006",
        "epochs.jsonl",
        "loss.png",
        "metrics.jsonl",
        "run.json",
        "samples",
    ]
    assert sorted(path.name for path in run.samples_dir.iterdir()) == [
        "epoch_0001.png",
        "epoch_0002.png",
    ]
    metrics = logged_losses(run.path)
    assert [line["step"] for line in metrics] == list(range(1, 7))
    assert set(metrics[0]) == {"epoch", "step", "loss_d", "loss_g", "d_real", "d_fake"}


def test_resuming_after_an_epoch_matches_an_uninterrupted_run(dcgan_entry, tmp_path):
    train(dcgan_entry, tmp_path / "straight", epochs=2)
    train(dcgan_entry, tmp_path / "resumed", epochs=1)
    train(dcgan_entry, tmp_path / "resumed", epochs=2, resume=True)
    assert_same_run(tmp_path / "straight", tmp_path / "resumed")


def test_ctrl_c_saves_mid_epoch_and_the_resumed_run_matches(dcgan_entry, tmp_path):
    handler = signal.getsignal(signal.SIGINT)  # ignored, where the suite runs in the background
    train(dcgan_entry, tmp_path / "straight", epochs=2)
    with pytest.raises(Interrupted, match=r"SIGINT: stopped at epoch 2, step 2/3.*--resume"):
        train(interrupting(dcgan_entry, at_step=4), tmp_path / "stopped", epochs=2)
    assert RunFolder(tmp_path / "stopped").read().progress.global_step == 5
    assert signal.getsignal(signal.SIGINT) is handler  # restored
    train(dcgan_entry, tmp_path / "stopped", epochs=2, resume=True)
    assert_same_run(tmp_path / "straight", tmp_path / "stopped")


def test_flipped_data_resumes_bit_exact_and_is_recorded(dcgan_entry, tmp_path):
    handler = signal.getsignal(signal.SIGINT)
    train(dcgan_entry, tmp_path / "straight", epochs=2, augment="flip")
    with pytest.raises(Interrupted):
        stopped = interrupting(dcgan_entry, at_step=4)
        train(stopped, tmp_path / "stopped", epochs=2, augment="flip", verify_data=True)
    assert signal.getsignal(signal.SIGINT) is handler
    assert RunFolder(tmp_path / "stopped").read().training.augment == ["flip"]
    train(dcgan_entry, tmp_path / "stopped", epochs=2, resume=True, augment="flip")  # its own
    assert_same_run(tmp_path / "straight", tmp_path / "stopped")
    train(dcgan_entry, tmp_path / "plain", epochs=2)
    plain, flipped = (
        checkpoint_tensors(tmp_path / "plain"),
        checkpoint_tensors(tmp_path / "straight"),
    )
    assert any(not torch.equal(plain[key], flipped[key]) for key in plain)
    with pytest.raises(GentoolError, match="--augment cannot change a run being resumed"):
        train(dcgan_entry, tmp_path / "stopped", epochs=3, resume=True, augment="none")
    with pytest.raises(GentoolError, match="unknown augmentation 'rotate': --augment takes flip"):
        train(dcgan_entry, tmp_path / "other", epochs=1, augment="flip,rotate")


def test_ctrl_c_while_an_epoch_ends_stops_before_the_next(dcgan_entry, tmp_path):
    class SampledDuringCtrlC(DCGAN):
        def sample(self, n, **options):
            os.kill(os.getpid(), signal.SIGINT)  # the epoch's grid is being drawn
            return super().sample(n, **options)

    plugin = replace(dcgan_entry.plugin, build=lambda config, s: SampledDuringCtrlC(config, s))
    with pytest.raises(Interrupted, match=r"SIGINT: stopped after epoch 1, checkpoint saved"):
        train(entry_for(plugin, dcgan_entry), tmp_path / "stopped", epochs=3)
    progress = RunFolder(tmp_path / "stopped").read().progress
    assert (progress.epoch, progress.step_in_epoch, progress.global_step) == (1, 0, 3)


def test_a_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(dcgan_entry, tmp_path):
    class DivergingDCGAN(DCGAN):
        def training_step(self, batch, ctx):
            logs = super().training_step(batch, ctx)
            if ctx.global_step == 4:
                logs["loss_g"] = torch.tensor(float("nan"))
            return logs

    plugin = replace(dcgan_entry.plugin, build=lambda config, spec: DivergingDCGAN(config, spec))
    with pytest.raises(TrainingError, match=r"non-finite values at epoch 2, step 2 \(loss_g=nan\)"):
        train(entry_for(plugin, dcgan_entry), tmp_path / "run", epochs=3)
    record = RunFolder(tmp_path / "run").read()
    assert (record.progress.epoch, record.checkpoint) == (1, "checkpoint-00000003")
    checkpoint_tensors(tmp_path / "run")  # still complete and readable


def test_resume_refuses_other_data_and_finished_runs(dcgan_entry, tmp_path):
    train(dcgan_entry, tmp_path / "run", epochs=1)
    with pytest.raises(DataError, match=r"differs from what .* was trained on"):
        train(dcgan_entry, tmp_path / "run", epochs=2, resume=True, data="builtin:shapes")
    with pytest.raises(GentoolError, match="already trained 1 epoch: pass --epochs N with N > 1"):
        train(dcgan_entry, tmp_path / "run", epochs=1, resume=True)


def test_an_existing_run_is_never_overwritten(dcgan_entry, tmp_path):
    train(dcgan_entry, tmp_path / "run", epochs=1)
    before = checkpoint_tensors(tmp_path / "run")
    with pytest.raises(GentoolError, match="already holds a run: continue it with --resume"):
        train(dcgan_entry, tmp_path / "run", epochs=1)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("mine")
    with pytest.raises(GentoolError, match="is not empty"):
        train(dcgan_entry, tmp_path / "other", epochs=1)
    after = checkpoint_tensors(tmp_path / "run")
    assert all(torch.equal(before[key], after[key]) for key in before)


def test_a_run_that_fails_before_training_leaves_no_folder(dcgan_entry, tmp_path):
    with pytest.raises(DataError):
        train(dcgan_entry, tmp_path / "run", epochs=1, data=str(tmp_path / "missing"))
    assert not (tmp_path / "run").exists()


@dataclass(frozen=True)
class TwoStageConfig:
    image_size: int = option(8, "side of the images")


class TwoStage(nn.Module):
    """An autoencoder trained in two phases: its encoder first, then its decoder."""

    def __init__(self, config, spec):
        super().__init__()
        pixels = spec.channels * spec.height * spec.width
        self.encoder = nn.Linear(pixels, 4)
        self.decoder = nn.Linear(4, pixels)

    def phases(self):
        return [Phase("encoder", 2, "encoder"), Phase("decoder", 1, "decoder")]

    def configure_optimizers(self):
        return {
            "encoder": torch.optim.SGD(self.encoder.parameters(), lr=0.1),
            "decoder": torch.optim.SGD(self.decoder.parameters(), lr=0.1),
        }

    def training_step(self, batch, ctx):
        x = batch.images.flatten(1)
        loss = nn.functional.mse_loss(self.decoder(torch.sigmoid(self.encoder(x))), x)
        return {"loss": loss}


TWO_STAGE = ModelPlugin(
    name="two-stage",
    summary="a phased test model",
    Config=TwoStageConfig,
    build=TwoStage,
    value_range=(0.0, 1.0),
)


def train_two_stage(dcgan_entry, run_dir, *, epochs, resume=False):
    request = TrainRequest(
        entry=entry_for(TWO_STAGE, dcgan_entry),
        config_values={},
        limit=None if resume else 32,
        batch_size=None if resume else 16,
        epochs=epochs,
        run_dir=run_dir,
        resume=resume,
        device="cpu",
    )
    output = io.StringIO()
    run_training(request, Console(file=output))
    return output.getvalue()


def test_phases_run_in_order_each_stepping_its_own_optimizer(dcgan_entry, tmp_path):
    shown = train_two_stage(dcgan_entry, tmp_path / "run", epochs=None)
    assert "epoch 1/3 · encoder" in shown and "epoch 3/3 · decoder" in shown
    phases = [(line["epoch"], line["phase"]) for line in logged_losses(tmp_path / "run")]
    assert phases == [(1, "encoder")] * 2 + [(2, "encoder")] * 2 + [(3, "decoder")] * 2

    train_two_stage(dcgan_entry, tmp_path / "encoder-only", epochs=2)
    torch.manual_seed(0)
    untrained = TwoStage(TwoStageConfig(), DataSpec(3, 8, 8))
    weights = checkpoint_tensors(tmp_path / "encoder-only")
    assert torch.equal(weights["decoder.weight"], untrained.decoder.weight.detach())
    assert not torch.equal(weights["encoder.weight"], untrained.encoder.weight.detach())


def test_a_run_resumes_in_the_middle_of_a_phase(dcgan_entry, tmp_path):
    train_two_stage(dcgan_entry, tmp_path / "straight", epochs=3)
    train_two_stage(dcgan_entry, tmp_path / "resumed", epochs=1)
    shown = train_two_stage(dcgan_entry, tmp_path / "resumed", epochs=3, resume=True)
    assert "epoch 2/3 · encoder" in shown and "epoch 1/3" not in shown
    assert_same_run(tmp_path / "straight", tmp_path / "resumed")


def test_epochs_past_the_phases_extend_the_last_one():
    phases = [Phase("a", 2), Phase("b", 1)]
    assert [phase_at(phases, epoch).name for epoch in range(5)] == ["a", "a", "b", "b", "b"]
    assert phase_at([], 0) is None


def test_each_epoch_line_times_that_epoch_alone(dcgan_entry, tmp_path):
    summary, _ = train(dcgan_entry, tmp_path / "run", epochs=3)
    lines = [json.loads(line) for line in (tmp_path / "run" / "epochs.jsonl").open()]
    assert [line["epoch"] for line in lines] == [1, 2, 3]
    assert 0 < sum(line["seconds"] for line in lines) <= summary.seconds
