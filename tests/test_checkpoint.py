from __future__ import annotations

import io
import json
import os
import pickle
import time

import pytest
import torch
from rich.console import Console

from gentool import checkpoint as checkpoint_module
from gentool.checkpoint import RunFolder, latest_run
from gentool.errors import CheckpointError, ConfigError
from gentool.models import load_trained
from gentool.record import RUN_FORMAT
from gentool.training import TrainRequest, run_training
from gentool.training.step import optimizers_of
from tests.conftest import TINY_DCGAN, disk_full_on_call

MARKER = "unpickled.marker"


class LeavesAMarker:
    """Unpickling this writes a file: proof that a loader ran code from a checkpoint."""

    def __reduce__(self):
        return (open, (MARKER, "w"))


@pytest.fixture
def trained(dcgan_entry, in_tmp):
    request = TrainRequest(
        entry=dcgan_entry,
        config_values=TINY_DCGAN,
        limit=32,
        batch_size=16,
        epochs=1,
        device="cpu",
    )
    _, run = run_training(request, Console(file=io.StringIO()))
    return run


def test_a_trained_model_loads_back_with_identical_weights(dcgan_entry, trained):
    model, _, run = load_trained(dcgan_entry, None, torch.device("cpu"))
    assert run.path == trained.path and not model.training
    again, _, _ = load_trained(dcgan_entry, trained.path, torch.device("cpu"))
    for (name, value), (_, other) in zip(
        model.state_dict().items(), again.state_dict().items(), strict=True
    ):
        assert torch.equal(value, other), name


def test_the_same_weights_are_saved_as_the_same_bytes(dcgan_entry, trained, in_tmp):
    """Digests compare checkpoints: nothing in a file may vary from one save to the next."""
    model, record, _ = load_trained(dcgan_entry, trained.path, torch.device("cpu"))
    optimizers = optimizers_of(model, dcgan_entry.plugin)
    contents = set()
    for copy in range(8):
        run = RunFolder(in_tmp / f"copy-{copy}")
        run.save(record, model, optimizers)
        contents.add((run.path / record.checkpoint / "model.safetensors").read_bytes())
    assert len(contents) == 1


def flip_a_byte_in_the_weights(run: RunFolder) -> None:
    """Damage that safetensors alone cannot see: the header stays valid, one weight changes."""
    weights = run.path / run.read().checkpoint / "model.safetensors"
    content = bytearray(weights.read_bytes())
    content[-3] ^= 0x40
    weights.write_bytes(bytes(content))


def edit_run_json(run: RunFolder, change) -> None:
    record = json.loads(run.run_file.read_text())
    change(record)
    run.run_file.write_text(json.dumps(record))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda run: run.run_file.write_text("{not json"), r"run.json is damaged"),
        (lambda run: run.run_file.write_text("[1, 2]"), r"run.json is damaged: not a JSON object"),
        (lambda run: run.run_file.unlink(), r"is not a gentool run folder \(no run.json\)"),
        (
            lambda run: edit_run_json(run, lambda r: r.update(format=RUN_FORMAT + 1)),
            r"written by gentool .* upgrade gentool",
        ),
        (
            lambda run: edit_run_json(run, lambda r: r["plugin"].update(name="vae")),
            r"is a run of 'vae', not 'dcgan'",
        ),
        (
            lambda run: edit_run_json(run, lambda r: r["config"].update(g_features=4)),
            r"do not fit this model \(other shapes: generator\..*; the plugin's code or the "
            r"run's config changed",
        ),
        (
            lambda run: edit_run_json(run, lambda r: r["config"].update(lr="fast")),
            r"run.json records a config that dcgan does not accept: option 'lr' of dcgan must "
            r"be float >= 0, got 'fast'; was it edited by hand",
        ),
        (
            lambda run: edit_run_json(run, lambda r: r["config"].update(latent_dimension=8)),
            r"run.json records a config that dcgan does not accept: unknown option",
        ),
        (
            lambda run: (run.path / run.read().checkpoint / "model.safetensors").unlink(),
            r"model.safetensors is missing",
        ),
        (
            lambda run: (run.path / run.read().checkpoint / "model.safetensors").write_bytes(
                b"\0" * 7
            ),
            r"model.safetensors is damaged",
        ),
        (flip_a_byte_in_the_weights, r"model.safetensors is damaged: .*SHA-256 mismatch"),
        (
            lambda run: edit_run_json(run, lambda r: r.update(checkpoint="../../elsewhere")),
            r"damaged: 'checkpoint' must be a name like checkpoint-00000450, not a path",
        ),
        (
            lambda run: edit_run_json(run, lambda r: r.update(plugin="dcgan")),
            r"damaged: 'plugin' is not a JSON object",
        ),
        (
            lambda run: edit_run_json(run, lambda r: r.update(config=[1])),
            r"damaged: 'config' is not a JSON object",
        ),
        (
            lambda run: edit_run_json(run, lambda r: r["progress"].update(epoch=-1)),
            r"damaged: 'progress.epoch' must be an integer ≥ 0, got -1",
        ),
        (
            lambda run: edit_run_json(run, lambda r: r["progress"].update(steps=3)),
            r"damaged: 'progress' has an unknown field 'steps'",
        ),
        (lambda run: run.run_file.write_bytes(b"\xff\xfe{"), r"run.json is damaged"),
    ],
)
def test_damaged_or_foreign_runs_are_clear_errors(dcgan_entry, trained, damage, message):
    damage(trained)
    with pytest.raises(CheckpointError, match=message):
        load_trained(dcgan_entry, trained.path, torch.device("cpu"))


def test_a_truncated_checkpoint_is_a_clear_error(dcgan_entry, trained):
    weights = trained.path / trained.read().checkpoint / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="is damaged"):
        load_trained(dcgan_entry, trained.path, torch.device("cpu"))


@pytest.mark.parametrize("writer", ["pickle", "torch.save"])
@pytest.mark.parametrize("file_name", ["model.safetensors", "optim.safetensors"])
def test_a_pickle_in_place_of_a_checkpoint_is_refused_without_running_it(
    dcgan_entry, trained, writer, file_name
):
    model, _, _ = load_trained(dcgan_entry, trained.path, torch.device("cpu"))
    optimizers = optimizers_of(model, dcgan_entry.plugin)
    target = trained.path / trained.read().checkpoint / file_name
    if writer == "pickle":
        target.write_bytes(pickle.dumps(LeavesAMarker()))
    else:
        torch.save({"weights": LeavesAMarker()}, target)  # a zip archive around a pickle
    for run_record in (trained.read(), _without_digests(trained)):
        with pytest.raises(CheckpointError, match="is damaged"):
            if file_name == "model.safetensors":
                trained.load_model(run_record, model)
            else:
                trained.load_optimizers(run_record, optimizers)
    assert not os.path.exists(MARKER)


def _without_digests(run: RunFolder):
    """The run's record as a run written before checkpoints carried digests would read."""
    record = run.read()
    record.checkpoint_sha256 = {}
    return record


@pytest.mark.parametrize(
    ("target", "call"),
    [
        ("gentool.checkpoint.write_tensor_file", 1),  # the model's tensors
        ("gentool.checkpoint.write_tensor_file", 2),  # the optimizers' tensors
        ("gentool.checkpoint.write_text", 1),  # run.json, after the checkpoint folder is in place
    ],
)
def test_a_full_disk_during_a_save_keeps_the_previous_checkpoint_and_says_so(
    dcgan_entry, trained, monkeypatch, target, call
):
    record = trained.read()
    assert record.checkpoint == "checkpoint-00000002"
    model_state = (trained.path / record.checkpoint / "model.safetensors").read_bytes()
    run_json = trained.run_file.read_bytes()
    model, _, _ = load_trained(dcgan_entry, trained.path, torch.device("cpu"))
    record.progress.global_step += 1
    monkeypatch.setattr(
        target, disk_full_on_call(call, getattr(checkpoint_module, target.rpartition(".")[2]))
    )
    with pytest.raises(CheckpointError) as raised:
        trained.save(record, model, {})
    assert str(raised.value) == (
        f"could not save a checkpoint in {trained.path}: the disk is full (No space left on "
        "device); nothing was lost: the previous checkpoint checkpoint-00000002 is intact and "
        "run.json still names it"
    )
    assert record.checkpoint == "checkpoint-00000002"  # the record in memory agrees with disk
    assert trained.run_file.read_bytes() == run_json
    assert (trained.path / "checkpoint-00000002" / "model.safetensors").read_bytes() == model_state
    leftovers = [path.name for path in trained.path.iterdir() if "checkpoint" in path.name]
    assert leftovers == ["checkpoint-00000002"]
    load_trained(dcgan_entry, trained.path, torch.device("cpu"))


def test_a_run_whose_config_no_longer_fits_its_data_is_a_config_error(dcgan_entry, trained):
    edit_run_json(trained, lambda record: record["config"].update(image_size=32))
    with pytest.raises(ConfigError, match="^dcgan was configured for 32×32 images") as raised:
        load_trained(dcgan_entry, trained.path, torch.device("cpu"))
    assert "dcgan: dcgan" not in str(raised.value)


def test_the_newest_run_is_found(dcgan_entry, trained, in_tmp):
    time.sleep(0.01)
    newer = in_tmp / "runs" / "dcgan" / "newer"
    newer.mkdir()
    (newer / "run.json").write_text(trained.run_file.read_text())
    assert latest_run("dcgan").path.name == "newer"
    with pytest.raises(CheckpointError, match=r"no runs of 'vae' under runs/vae: train one"):
        latest_run("vae")
