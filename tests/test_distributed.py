"""Data-parallel training through real torchrun: two gloo processes on the CPU.

The runs use probe versions of dcgan, vae and ae, installed as a plugin distribution that the
torchrun workers discover. Every process writes down, each step, the images it was given and a
digest of its weights, and the gradients of each optimizer's first step (after averaging), so a
test sees what each rank did although only rank 0 writes a run folder.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from rich.console import Console
from safetensors.torch import load_file

from gentool.checkpoint import RunFolder
from gentool.errors import GentoolError
from gentool.registry import resolve
from gentool.training import TrainRequest, run_training
from gentool.training.distributed import Ranks, rank_seed, shard_size
from tests.conftest import TINY_DCGAN, TINY_DCGAN_ARGS, install_fake_distribution
from tests.test_train import checkpoint_tensors, logged_losses

TINY_VAE = {"image_size": 16, "latent_dim": 4, "features": 4}
TINY_AE = {"image_size": 8, "hidden": "16", "code_dim": 4}
GLOBAL_BATCH = 16
IMAGES = 48  # three steps an epoch
TORCHRUN_TIMEOUT = 120

PROBE_SOURCE = """
import hashlib
import json
import os
from dataclasses import replace
from pathlib import Path

import torch
from safetensors.torch import save_file

from gentool.plugins.ae import plugin as ae_plugin
from gentool.plugins.dcgan import plugin as dcgan_plugin
from gentool.plugins.deep_ae import plugin as deep_ae_plugin
from gentool.plugins.vae import plugin as vae_plugin


def _digest(tensor):
    return hashlib.sha256(tensor.detach().contiguous().numpy().tobytes()).hexdigest()


def _probe_file(name):
    return Path(os.environ["PROBE_DIR"]) / f"{name}-rank{os.environ.get('RANK', '0')}"


def _recording_first_gradients(name):
    def record(optimizer, args, kwargs):
        path = _probe_file(f"grads-{name}")
        if not path.exists():
            params = [p for group in optimizer.param_groups for p in group["params"]]
            save_file({str(i): p.grad.clone() for i, p in enumerate(params)}, path)

    return record


def _probing(base):
    def build(config, spec):
        model = base.build(config, spec)
        step, configure = model.training_step, model.configure_optimizers

        def probed_step(batch, ctx):
            weights = torch.cat([value.flatten().double() for value in model.state_dict().values()])
            record = {
                "step": ctx.global_step,
                "images": [_digest(image) for image in batch.images],
                "weights": _digest(weights),
            }
            with _probe_file("steps").open("a") as file:
                file.write(json.dumps(record) + "\\n")
            return step(batch, ctx)

        def probed_optimizers():
            optimizers = configure()
            for name, optimizer in optimizers.items():
                optimizer.register_step_pre_hook(_recording_first_gradients(name))
            return optimizers

        model.training_step, model.configure_optimizers = probed_step, probed_optimizers
        return model

    return replace(base, name="probe-" + base.name, build=build)


dcgan = _probing(dcgan_plugin)
vae = _probing(vae_plugin)
ae = _probing(ae_plugin)
deep_ae = _probing(deep_ae_plugin)
"""


@pytest.fixture
def probes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The probe plugins, installed in this process; the environment for torchrun's workers."""
    site = tmp_path / "site"
    install_fake_distribution(
        site,
        monkeypatch,
        module="probe_models",
        source=PROBE_SOURCE,
        entry_points={
            "probe-dcgan": "probe_models:dcgan",
            "probe-vae": "probe_models:vae",
            "probe-ae": "probe_models:ae",
            "probe-deep-ae": "probe_models:deep_ae",
        },
    )
    monkeypatch.chdir(tmp_path)
    root = Path(__file__).resolve().parents[1]
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(root)])}


def torchrun(environment: dict[str, str], *arguments: str) -> subprocess.CompletedProcess:
    """`gentool ARGUMENTS` in two processes started by torchrun."""
    launcher = ("-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2")
    result = subprocess.run(
        [sys.executable, *launcher, "-m", "gentool", *arguments],
        env={**environment, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=TORCHRUN_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result


def train_in_two_processes(
    environment: dict[str, str], probe_dir: Path, name: str, config: dict, epochs: int = 1
) -> Path:
    """Train `name` for `epochs` epochs in two processes; the run folder it wrote."""
    probe_dir.mkdir()
    options = [arg for key, value in config.items() for arg in ("-o", f"{key}={value}")]
    result = torchrun(
        {**environment, "PROBE_DIR": str(probe_dir)},
        *("train", name, *options, "--device", "cpu", "--epochs", str(epochs)),
        *("--limit", str(IMAGES), "--batch-size", str(GLOBAL_BATCH)),
    )
    runs = list((Path("runs") / name).iterdir())
    assert len(runs) == 1  # rank 0 alone wrote a run folder, and both ranks agreed on its name
    assert "done:" in result.stdout and result.stdout.count(f"epoch 1/{epochs}") == 1  # rank 0
    return runs[0]


def single_process(
    name: str,
    config: dict,
    run_dir: Path,
    probe_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    *,
    epochs: int = 1,
    resume: bool = False,
) -> str:
    """Train `name` in this one process; what it printed."""
    probe_dir.mkdir(exist_ok=True)
    monkeypatch.setenv("PROBE_DIR", str(probe_dir))
    shown = io.StringIO()
    request = TrainRequest(
        entry=resolve(f"probe-{name}"),
        config_values={} if resume else config,
        limit=None if resume else IMAGES,
        batch_size=None if resume else GLOBAL_BATCH,
        epochs=epochs,
        run_dir=run_dir,
        resume=resume,
        device="cpu",
    )
    run_training(request, Console(file=shown))
    return shown.getvalue()


def steps_seen(probe_dir: Path, rank: int) -> list[dict]:
    lines = (probe_dir / f"steps-rank{rank}").read_text().splitlines()
    return [json.loads(line) for line in lines]


def first_gradients(probe_dir: Path, optimizer: str, rank: int) -> torch.Tensor:
    tensors = load_file(probe_dir / f"grads-{optimizer}-rank{rank}")
    return torch.cat([tensors[str(index)].flatten() for index in range(len(tensors))])


@pytest.mark.parametrize(
    ("name", "config", "optimizers"),
    [("dcgan", TINY_DCGAN, ("d", "g")), ("vae", TINY_VAE, ("vae",))],
)
def test_two_processes_shard_the_data_and_train_one_model(
    name, config, optimizers, probes, tmp_path, monkeypatch, tiny_cpu_training
):
    two = train_in_two_processes(probes, tmp_path / "probe2", f"probe-{name}", config)
    rank0, rank1 = steps_seen(tmp_path / "probe2", 0), steps_seen(tmp_path / "probe2", 1)
    assert [record["step"] for record in rank0] == [record["step"] for record in rank1] == [0, 1, 2]
    for first, second in zip(rank0, rank1, strict=True):
        assert len(first["images"]) == len(second["images"]) == GLOBAL_BATCH // 2
        assert not set(first["images"]) & set(second["images"])  # disjoint shards
        assert first["weights"] == second["weights"]  # one model on both ranks, every step
    for optimizer in optimizers:  # each optimizer stepped on the same, averaged gradients
        assert torch.equal(
            first_gradients(tmp_path / "probe2", optimizer, 0),
            first_gradients(tmp_path / "probe2", optimizer, 1),
        )

    single_process(name, config, tmp_path / "one", tmp_path / "probe1", monkeypatch)
    one = steps_seen(tmp_path / "probe1", 0)
    for first, second, whole in zip(rank0, rank1, one, strict=True):
        assert first["images"] + second["images"] == whole["images"]  # the same global batches
    assert rank0[0]["weights"] == one[0]["weights"]  # from the same initial weights
    # The first step's logged values, averaged over the ranks, are the single process's up to
    # what the processes cannot share on the CPU: BatchNorm normalises each rank's 8 images by
    # their own statistics (SyncBatchNorm runs on CUDA only) and each rank draws its own noise.
    # (Exact agreement without either: the ae test below.)
    two_first, one_first = logged_losses(two)[0], logged_losses(tmp_path / "one")[0]
    assert two_first.keys() == one_first.keys()
    for key, value in one_first.items():
        assert two_first[key] == pytest.approx(value, rel=5e-3, abs=2e-2), key

    shown = single_process(
        name, config, two, tmp_path / "probe1", monkeypatch, epochs=2, resume=True
    )
    assert "resuming a run of 2 processes with 1" in shown
    assert RunFolder(two).read().progress.global_step == 6
    assert [line["step"] for line in logged_losses(two)] == [1, 2, 3, 4, 5, 6]


def test_without_batchnorm_or_noise_two_processes_match_one_and_resume_on_one(
    probes, tmp_path, monkeypatch, tiny_cpu_training
):
    two = train_in_two_processes(probes, tmp_path / "probe2", "probe-ae", TINY_AE)
    single_process("ae", TINY_AE, tmp_path / "one", tmp_path / "probe1", monkeypatch)
    torch.testing.assert_close(
        first_gradients(tmp_path / "probe2", "ae", 0),
        first_gradients(tmp_path / "probe1", "ae", 0),
        rtol=1e-5,
        atol=1e-7,
    )
    assert_same_training(two, tmp_path / "one")

    # A two-process run resumed in one process goes on as a one-process run would have.
    single_process("ae", TINY_AE, two, tmp_path / "probe1", monkeypatch, epochs=2, resume=True)
    single_process(
        "ae", TINY_AE, tmp_path / "one", tmp_path / "probe1", monkeypatch, epochs=2, resume=True
    )
    assert_same_training(two, tmp_path / "one")


def assert_same_training(two: Path, one: Path) -> None:
    """The same weights and optimizer state up to float summation order, the same losses."""
    two_tensors, one_tensors = checkpoint_tensors(two), checkpoint_tensors(one)
    assert two_tensors.keys() == one_tensors.keys()  # the checkpoint format of one process
    for key, value in one_tensors.items():
        torch.testing.assert_close(two_tensors[key], value, rtol=1e-4, atol=1e-6, msg=key)
    two_logged, one_logged = logged_losses(two), logged_losses(one)
    assert [line["step"] for line in two_logged] == [line["step"] for line in one_logged]
    for two_line, one_line in zip(two_logged, one_logged, strict=True):
        assert two_line["loss"] == pytest.approx(one_line["loss"], rel=1e-5)


def test_gradients_a_model_writes_by_hand_are_averaged_too(probes, tmp_path, tiny_cpu_training):
    # deep-ae's RBM phases put CD-1 updates into .grad without a backward pass; its fine-tuning
    # phase back-propagates: three phases, three epochs.
    config = {"image_size": 8, "hidden": "16,4", "rbm_epochs": 1, "finetune_epochs": 1}
    train_in_two_processes(probes, tmp_path / "probe2", "probe-deep-ae", config, epochs=3)
    rank0, rank1 = steps_seen(tmp_path / "probe2", 0), steps_seen(tmp_path / "probe2", 1)
    assert [record["step"] for record in rank0] == list(range(9))
    assert [record["weights"] for record in rank0] == [record["weights"] for record in rank1]
    for optimizer in ("rbm 1", "rbm 2", "fine-tune"):
        assert torch.equal(
            first_gradients(tmp_path / "probe2", optimizer, 0),
            first_gradients(tmp_path / "probe2", optimizer, 1),
        )


def test_bench_train_times_the_steps_of_two_processes(probes):
    result = torchrun(
        probes,
        *("bench", "train", "dcgan", *TINY_DCGAN_ARGS, "-b", "8", "--steps", "1"),
        *("--variants", "eager,channels-last", "--device", "cpu"),
    )
    assert result.stdout.count("cpu × 2 processes") == 1  # one table, from rank 0
    assert "channels-last" in result.stdout and "skipped" not in result.stdout


def test_shards_must_divide_the_global_batch():
    assert shard_size(16, Ranks(rank=1, world_size=4)) == 4
    with pytest.raises(GentoolError, match="--batch-size 10 does not split over 4 processes"):
        shard_size(10, Ranks(world_size=4))


def test_each_rank_draws_its_own_reproducible_noise():
    seeds = {rank_seed(0, rank) for rank in range(8)} | {rank_seed(1, rank) for rank in range(8)}
    assert len(seeds) == 16
    assert rank_seed(3, 2, step=40) == rank_seed(3, 2, step=40) != rank_seed(3, 2, step=41)
