"""The deep autoencoder: RBMs learn by CD-1, and the unrolled net starts from their weights."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from rich.console import Console
from safetensors.torch import load_file
from typer.testing import CliRunner

from gentool.api import Batch, DataSpec
from gentool.checkpoint import RunFolder
from gentool.cli import app
from gentool.plugins.deep_ae import plugin
from gentool.plugins.deep_ae.model import DeepAutoencoder
from gentool.registry import resolve
from gentool.training import TrainRequest, run_training
from gentool.training.step import StepContext, optimizers_of, train_step

TINY = {"image_size": 8, "hidden": (16, 4), "rbm_epochs": 1, "finetune_epochs": 1}


def build(channels=3, **overrides) -> DeepAutoencoder:
    return plugin.build(plugin.parse_config({**TINY, **overrides}), DataSpec(channels, 8, 8))


def run_phase(model: DeepAutoencoder, phase: str, x: torch.Tensor, steps: int = 1) -> None:
    optimizers = optimizers_of(model, plugin)
    context = StepContext(optimizers, torch.device("cpu"))
    context.phase = phase
    for _ in range(steps):
        train_step(model, Batch(x), context, plugin)


def test_phases_are_one_per_rbm_then_fine_tuning():
    assert [(p.name, p.epochs) for p in build().phases()] == [
        ("rbm 1", 1),
        ("rbm 2", 1),
        ("fine-tune", 1),
    ]


def test_each_rbm_reconstructs_better_as_cd1_goes_on(tmp_path):
    config = {**TINY, "hidden": (32, 8), "rbm_epochs": 4, "rbm_lr": 0.1, "code_rbm_lr": 0.01}
    request = TrainRequest(
        entry=resolve("deep-ae"),
        config_values=config,
        data="builtin:shapes",
        limit=128,
        batch_size=16,  # 8 steps an epoch
        run_dir=tmp_path / "run",
        device="cpu",
    )
    run_training(request, Console(file=io.StringIO()))
    lines = [
        json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    ]
    for phase in ("rbm 1", "rbm 2"):
        errors = [line["recon"] for line in lines if line["phase"] == phase]
        assert len(errors) == 4 * 8
        first_epoch, last_epoch = sum(errors[:8]) / 8, sum(errors[-8:]) / 8
        assert last_epoch < 0.8 * first_epoch, (phase, first_epoch, last_epoch)


@pytest.mark.parametrize("phase", ["rbm 1", "rbm 2"])  # Bernoulli hidden units, then linear ones
def test_a_cd1_update_matches_a_float64_hand_computation(phase):
    config = {"hidden": (5, 3), "rbm_lr": 1.0, "code_rbm_lr": 1.0, "rbm_momentum": 0.0}
    torch.manual_seed(0)
    model = build(channels=1, weight_cost=0.01, **config)
    with torch.no_grad():  # biases away from zero, so that their updates are tested too
        for parameter in model.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    index = int(phase.split()[1]) - 1
    rbm = model.rbms[index]
    W, b, c = (p.detach().double().clone() for p in (rbm.weight, rbm.visible_bias, rbm.hidden_bias))

    torch.manual_seed(5)
    run_phase(model, phase, x)

    v0 = x.flatten(1).double()
    for below in model.rbms[:index]:
        v0 = torch.sigmoid(v0 @ below.weight.detach().double().T + below.hidden_bias.double())
    torch.manual_seed(5)  # the same draws as the model's: uniforms, or unit Gaussian noise
    if rbm.linear_hidden:
        p0 = v0 @ W.T + c
        h0 = p0 + torch.randn(p0.shape).double()
    else:
        p0 = torch.sigmoid(v0 @ W.T + c)
        h0 = (torch.rand(p0.shape).double() < p0).double()
    v1 = torch.sigmoid(h0 @ W + b)
    p1 = v1 @ W.T + c if rbm.linear_hidden else torch.sigmoid(v1 @ W.T + c)
    # With lr 1 and no momentum, one SGD step adds exactly the CD-1 update.
    expected_W = W + (p0.T @ v0 - p1.T @ v1) / 4 - 0.01 * W
    expected_b = b + (v0 - v1).mean(dim=0)
    expected_c = c + (p0 - p1).mean(dim=0)
    tolerance = {"rtol": 1e-5, "atol": 1e-6}
    torch.testing.assert_close(rbm.weight.detach().double(), expected_W, **tolerance)
    torch.testing.assert_close(rbm.visible_bias.detach().double(), expected_b, **tolerance)
    torch.testing.assert_close(rbm.hidden_bias.detach().double(), expected_c, **tolerance)


def test_the_unrolled_net_starts_from_the_rbm_weights_then_unties_them():
    torch.manual_seed(0)
    model = build()
    x = torch.rand(16, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    run_phase(model, "rbm 1", x, steps=3)
    run_phase(model, "rbm 2", x, steps=3)
    for index, rbm in enumerate(model.rbms):
        encoder_weight, encoder_bias = model.encoder_layer(index)
        decoder_weight, decoder_bias = model.decoder_layer(index)
        assert torch.equal(encoder_weight, rbm.weight)
        assert torch.equal(decoder_weight, encoder_weight.T)
        assert torch.equal(encoder_bias, rbm.hidden_bias)
        assert torch.equal(decoder_bias, rbm.visible_bias)
    # The code is the top RBM's linear hidden means of the lower RBM's probabilities.
    expected = model.rbms[1].hidden_mean(model.rbms[0].hidden_mean(x.flatten(1)))
    torch.testing.assert_close(model.encode(x), expected)

    pretrained = {name: value.detach().clone() for name, value in model.rbms.named_parameters()}
    run_phase(model, "fine-tune", x)
    assert all(
        torch.equal(value, pretrained[name]) for name, value in model.rbms.named_parameters()
    )
    for index in range(len(model.rbms)):
        assert not torch.equal(model.decoder_layer(index)[0], model.encoder_layer(index)[0].T)


def test_trains_through_the_cli(in_tmp):
    options = ["-o", "image_size=8", "-o", "hidden=16,4", "-o", "rbm_epochs=1"]
    result = CliRunner().invoke(
        app,
        [
            "train",
            "deep-ae",
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
    assert "· rbm 1" in result.output and "· rbm 2" in result.output
    assert "· fine-tune" in result.output


def test_fine_tuning_is_adam_on_an_untied_copy_of_the_rbms():
    """The offsets take the steps Adam would take on copies of the RBMs' weights."""
    torch.manual_seed(0)
    model = build()
    x = torch.rand(16, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    run_phase(model, "rbm 1", x, steps=3)
    run_phase(model, "rbm 2", x, steps=3)

    def copy(tensor: torch.Tensor) -> torch.Tensor:
        return tensor.detach().clone().contiguous().requires_grad_()

    encoder = [(copy(rbm.weight), copy(rbm.hidden_bias)) for rbm in model.rbms]
    decoder = [(copy(rbm.weight.t()), copy(rbm.visible_bias)) for rbm in model.rbms]
    adam = torch.optim.Adam([p for pair in encoder + decoder for p in pair], lr=model.config.lr)
    for _ in range(2):
        adam.zero_grad()
        h = x.flatten(1)
        for index, (weight, bias) in enumerate(encoder):
            h = F.linear(h, weight, bias)
            h = h if index == len(encoder) - 1 else torch.sigmoid(h)
        for index, (weight, bias) in reversed(list(enumerate(decoder))):
            h = F.linear(h, weight, bias)
            h = torch.sigmoid(h) if index > 0 else h
        F.binary_cross_entropy_with_logits(h, x.flatten(1)).backward()
        adam.step()

    run_phase(model, "fine-tune", x, steps=2)
    for index in range(len(model.rbms)):
        for got, want in zip(model.encoder_layer(index), encoder[index], strict=True):
            torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)
        for got, want in zip(model.decoder_layer(index), decoder[index], strict=True):
            torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)


def test_resuming_before_and_during_fine_tuning_matches_an_uninterrupted_run(tmp_path):
    config = {**TINY, "finetune_epochs": 2}  # rbm 1, rbm 2, then two epochs of fine-tuning

    def train(run_dir: Path, epochs: int, *, resume: bool = False) -> None:
        request = TrainRequest(
            entry=resolve("deep-ae"),
            config_values={} if resume else config,
            limit=None if resume else 32,
            batch_size=None if resume else 16,
            epochs=epochs,
            run_dir=run_dir,
            resume=resume,
            device="cpu",
        )
        run_training(request, Console(file=io.StringIO()))

    def checkpoint(run_dir: Path) -> dict[str, torch.Tensor]:
        folder = run_dir / RunFolder(run_dir).read().checkpoint
        return {
            **load_file(folder / "model.safetensors"),
            **{f"optim/{k}": v for k, v in load_file(folder / "optim.safetensors").items()},
        }

    def metrics(run_dir: Path) -> list[dict]:
        return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]

    train(tmp_path / "straight", 4)
    train(tmp_path / "resumed", 2)  # stops before fine-tuning
    train(tmp_path / "resumed", 3, resume=True)  # stops after one epoch of fine-tuning
    train(tmp_path / "resumed", 4, resume=True)
    want, got = checkpoint(tmp_path / "straight"), checkpoint(tmp_path / "resumed")
    assert want.keys() == got.keys()
    assert [key for key in want if not torch.equal(want[key], got[key])] == []
    assert metrics(tmp_path / "straight") == metrics(tmp_path / "resumed")
