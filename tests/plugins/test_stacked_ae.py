"""The stacked autoencoder: greedy phases that each train one AE, then fine-tuning of the stack."""

from __future__ import annotations

import io
import json
from pathlib import Path

import torch
from rich.console import Console
from safetensors.torch import load_file
from typer.testing import CliRunner

from gentool.api import Batch, DataSpec
from gentool.checkpoint import RunFolder
from gentool.cli import app
from gentool.models import load_trained
from gentool.plugins.stacked_ae import plugin
from gentool.registry import resolve
from gentool.synthetic import SHAPE_CLASSES, make_shapes
from gentool.training import TrainRequest, run_training
from gentool.training.step import StepContext, optimizers_of, train_step

TINY = {"image_size": 8, "hidden": (8, 4), "layer_epochs": 2, "finetune_epochs": 1}


def train(run_dir: Path, *, config=None, epochs=None, resume=False, data=None, limit=32, batch=16):
    request = TrainRequest(
        entry=resolve("stacked-ae"),
        config_values={} if resume else (config or TINY),
        data=data,
        limit=None if resume else limit,
        batch_size=None if resume else batch,
        epochs=epochs,
        run_dir=run_dir,
        resume=resume,
        device="cpu",
    )
    return run_training(request, Console(file=io.StringIO()))


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def checkpoint_tensors(run_dir: Path) -> dict[str, torch.Tensor]:
    folder = run_dir / RunFolder(run_dir).read().checkpoint
    return {
        **load_file(folder / "model.safetensors"),
        **{f"optim/{k}": v for k, v in load_file(folder / "optim.safetensors").items()},
    }


def test_phases_are_one_per_layer_then_fine_tuning_each_with_its_optimizer():
    model = plugin.build(plugin.parse_config(TINY), DataSpec(3, 8, 8))
    assert [(p.name, p.epochs, p.optimizer) for p in model.phases()] == [
        ("layer 1", 2, "layer 1"),
        ("layer 2", 2, "layer 2"),
        ("fine-tune", 1, "fine-tune"),
    ]
    assert set(model.configure_optimizers()) == {"layer 1", "layer 2", "fine-tune"}


def test_each_pretraining_phase_reduces_its_own_reconstruction_error(tmp_path):
    config = {**TINY, "hidden": (32, 8), "layer_epochs": 4, "lr": 3e-2}
    train(tmp_path / "run", config=config, data="builtin:shapes", limit=128)  # 8 steps an epoch
    lines = metrics(tmp_path / "run")
    for phase in ("layer 1", "layer 2"):
        errors = [line["recon"] for line in lines if line["phase"] == phase]
        assert len(errors) == 4 * 8
        first_epoch, last_epoch = sum(errors[:8]) / 8, sum(errors[-8:]) / 8
        assert last_epoch < 0.8 * first_epoch, (phase, first_epoch, last_epoch)


def test_a_layer_phase_moves_only_that_layers_weights():
    spec = DataSpec(3, 8, 8, class_names=SHAPE_CLASSES)
    torch.manual_seed(0)
    model = plugin.build(plugin.parse_config(TINY), spec)
    optimizers = optimizers_of(model, plugin)
    context = StepContext(optimizers, torch.device("cpu"))
    x = torch.rand(16, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    batch = Batch(x, torch.arange(16) % len(SHAPE_CLASSES))

    def weights(*layers: int) -> set[str]:
        return {
            f"layers.{i}.{part}.{kind}"
            for i in layers
            for part in ("encoder", "decoder")
            for kind in ("weight", "bias")
        }

    expected = {
        "layer 1": weights(0),
        "layer 2": weights(1),
        # fine-tuning moves the pretrained weights of every layer, and the classifier
        "fine-tune": weights(0, 1) | {"classifier.weight", "classifier.bias"},
    }
    for phase in model.phases():
        before = {name: value.detach().clone() for name, value in model.named_parameters()}
        context.phase, context.phase_optimizer = phase.name, phase.optimizer
        train_step(model, batch, context, plugin)
        moved = {
            name for name, value in model.named_parameters() if not torch.equal(value, before[name])
        }
        assert moved == expected[phase.name], phase.name


def test_the_fine_tuned_stack_starts_from_the_pretrained_one():
    model = plugin.build(plugin.parse_config(TINY), DataSpec(3, 8, 8))
    x = torch.rand(4, 3 * 8 * 8)
    pretrained = x
    for layer in model.layers:
        pretrained = layer.encode(pretrained)
    torch.testing.assert_close(model.encode(x.view(4, 3, 8, 8)), pretrained)


def test_a_linear_probe_on_the_top_code_of_labelled_data_beats_chance(tmp_path):
    config = {"image_size": 8, "hidden": (64, 16), "layer_epochs": 1, "finetune_epochs": 6}
    train(
        tmp_path / "run", config={**config, "lr": 1e-2}, data="builtin:shapes", limit=600, batch=32
    )
    fine_tuning = [line for line in metrics(tmp_path / "run") if line["phase"] == "fine-tune"]
    assert {"recon", "class_loss", "accuracy"} <= set(fine_tuning[-1])

    model, _, _ = load_trained(resolve("stacked-ae"), tmp_path / "run", torch.device("cpu"))

    def features(count: int, start: int, *, raw: bool) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = make_shapes(count, 8, start=start)
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
        values = x.flatten(1) if raw else model.encode(x)
        return torch.cat([values, torch.ones(count, 1)], dim=1).double(), torch.from_numpy(labels)

    def probe_accuracy(*, raw: bool) -> float:
        """Least squares onto one-hot targets, fitted on the training images, scored on new ones."""
        values, labels = features(600, 0, raw=raw)
        targets = torch.nn.functional.one_hot(labels, len(SHAPE_CLASSES)).double()
        probe = torch.linalg.lstsq(values, targets, driver="gelsd").solution
        held_out, held_out_labels = features(300, 600, raw=raw)
        return ((held_out @ probe).argmax(dim=1) == held_out_labels).double().mean().item()

    on_codes, on_pixels = probe_accuracy(raw=False), probe_accuracy(raw=True)
    assert on_codes > 1.5 / len(SHAPE_CLASSES), on_codes  # chance is 1/6
    assert on_codes > on_pixels  # MODELS.md: the top code beats raw pixels for a linear probe


def test_resuming_mid_phase_matches_an_uninterrupted_run(tmp_path):
    train(tmp_path / "straight")  # no --epochs: every phase, 2 + 2 + 1 epochs
    assert RunFolder(tmp_path / "straight").read().training.epochs == 5
    train(tmp_path / "resumed", epochs=1)  # stops halfway through "layer 1"
    assert {line["phase"] for line in metrics(tmp_path / "resumed")} == {"layer 1"}
    train(tmp_path / "resumed", epochs=5, resume=True)
    want, got = checkpoint_tensors(tmp_path / "straight"), checkpoint_tensors(tmp_path / "resumed")
    assert want.keys() == got.keys()
    assert [key for key in want if not torch.equal(want[key], got[key])] == []
    assert metrics(tmp_path / "straight") == metrics(tmp_path / "resumed")


def test_the_progress_names_the_phases_when_trained_through_the_cli(in_tmp):
    options = ["-o", "image_size=8", "-o", "hidden=8,4", "-o", "layer_epochs=1"]
    result = CliRunner().invoke(
        app,
        [
            "train",
            "stacked-ae",
            *options,
            "-o",
            "finetune_epochs=1",
            "--limit",
            "32",
            "-b",
            "16",
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "epoch 1/3 · layer 1" in result.output
    assert "epoch 2/3 · layer 2" in result.output
    assert "epoch 3/3 · fine-tune" in result.output
    (run,) = (in_tmp / "runs" / "stacked-ae").iterdir()
    assert [line["phase"] for line in metrics(run)] == ["layer 1"] * 2 + ["layer 2"] * 2 + [
        "fine-tune"
    ] * 2
