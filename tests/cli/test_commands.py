"""The commands end to end through Typer's runner, as a user types them."""

from __future__ import annotations

import json

import pytest
from PIL import Image
from typer.testing import CliRunner

from gentool.cli import app
from tests.conftest import TINY_DCGAN_ARGS

runner = CliRunner()
TRAIN_TINY = ["train", "dcgan", *TINY_DCGAN_ARGS, "--limit", "32", "-b", "16", "--device", "cpu"]


def invoke(*args: str):
    return runner.invoke(app, list(args))


def assert_one_line_error(result, exit_code: int, text: str) -> None:
    assert result.exit_code == exit_code, result.output
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert text in lines[0]


def test_train_then_sample_writes_an_8_by_8_grid(in_tmp):
    trained = invoke(*TRAIN_TINY, "--epochs", "2")
    assert trained.exit_code == 0, trained.output
    assert "epoch 1/2:" in trained.output and "done: 2 epochs of dcgan" in trained.output
    (run,) = (in_tmp / "runs" / "dcgan").iterdir()
    assert (run / "samples" / "epoch_0002.png").exists()

    sampled = invoke("sample", "dcgan", "--n", "64", "--out", "grid.png")
    assert sampled.exit_code == 0, sampled.output
    assert "wrote 64 samples (8 per row) to grid.png" in sampled.output
    with Image.open(in_tmp / "grid.png") as grid:
        assert grid.size == (8 * 18 + 2, 8 * 18 + 2)  # 16-pixel images, 2-pixel gaps


def test_sampling_defaults_to_the_run_folder_and_repeats_with_a_seed(in_tmp):
    invoke(*TRAIN_TINY, "--epochs", "1", "--run-dir", "run")
    first = invoke("sample", "dcgan", "--run", "run", "--n", "4", "--seed", "7")
    assert first.exit_code == 0, first.output
    path = in_tmp / "run" / "samples" / "sample_seed7_n4.png"
    invoke("sample", "dcgan", "--run", "run", "--n", "4", "--seed", "7", "--out", "again.png")
    invoke("sample", "dcgan", "--run", "run", "--n", "4", "--seed", "8", "--out", "other.png")
    with Image.open(path) as one, Image.open(in_tmp / "again.png") as two:
        assert one.size == (2 * 18 + 2, 2 * 18 + 2)  # 4 samples: a 2×2 grid
        assert one.tobytes() == two.tobytes()
        with Image.open(in_tmp / "other.png") as other:
            assert other.tobytes() != one.tobytes()


def test_resume_continues_a_run_to_more_epochs(in_tmp):
    invoke(*TRAIN_TINY, "--epochs", "1", "--run-dir", "run")
    resumed = invoke("train", "dcgan", "--resume", "--run-dir", "run", "--epochs", "2")
    assert resumed.exit_code == 0, resumed.output
    assert "epoch 2/2:" in resumed.output and "epoch 1/2" not in resumed.output
    assert json.loads((in_tmp / "run" / "run.json").read_text())["progress"]["epoch"] == 2
    steps = json.loads((in_tmp / "run" / "run.json").read_text())["progress"]["global_step"]
    assert f"({steps} steps, {steps // 2} of them now," in resumed.output


def test_training_on_a_folder_of_pngs_made_by_data_make(in_tmp):
    made = invoke("data", "make", "faces", "faces", "--n", "32", "--size", "16")
    assert made.exit_code == 0 and "wrote 32 faces images (16×16) to faces" in made.output
    assert len(list((in_tmp / "faces").glob("*.png"))) == 32
    trained = invoke(*TRAIN_TINY, "--data", "faces", "--epochs", "1", "--run-dir", "run")
    assert trained.exit_code == 0, trained.output
    record = json.loads((in_tmp / "run" / "run.json").read_text())
    assert record["data"]["source"] == "faces" and record["data"]["count"] == 32


def test_config_file_and_overrides_set_config_fields(in_tmp):
    # A byte-order mark, text where the option takes text, and values only -o makes valid.
    (in_tmp / "tiny.toml").write_text(
        '\ufeffimage_size = 48\nlatent_dim = 8\ng_features = 4\ndiffaugment = "color"\n'
        'd_features = "4"\n',
        encoding="utf-8",
    )
    trained = invoke(
        "train",
        "dcgan",
        "--config",
        "tiny.toml",
        "-o",
        "image_size=16",
        "-o",
        "d_features=4",
        "-o",
        "g_features=6",
        "--lr",
        "1e-3",
        "--limit",
        "16",
        "-b",
        "16",
        "--epochs",
        "1",
        "--run-dir",
        "run",
    )
    assert trained.exit_code == 0, trained.output
    config = json.loads((in_tmp / "run" / "run.json").read_text())["config"]
    assert (config["g_features"], config["d_features"], config["lr"]) == (6, 4, 1e-3)
    assert (config["image_size"], config["diffaugment"]) == (16, ["color"])


@pytest.mark.parametrize(
    ("args", "text"),
    [
        (["train", "gan9000"], "unknown model 'gan9000'; available models:"),
        (["train", "dcgan", "-o", "latnet_dim=3"], "did you mean 'latent_dim'?"),
        (
            ["train", "dcgan", "-o", "image_size=big"],
            "option 'image_size' of dcgan must be int >= 16",
        ),
        (["train", "dcgan", "-o", "image_size=48"], "must be a power of two"),
        (["train", "dcgan", "--lr", "-1"], "option 'lr' of dcgan must be float >= 0, got -1.0"),
        (["train", "dcgan", "-o", "latent_dim"], "expected key=value after -o"),
        (["train", "dcgan", "--config", "missing.toml"], "config file missing.toml does not exist"),
        (["train", "dcgan", "--data", "nowhere"], "data path 'nowhere' does not exist"),
        (
            ["train", "dcgan", "--resume", "-o", "lr=1"],
            "--option cannot be given with --resume",
        ),
        (["train", "dcgan", "--resume"], "no runs of 'dcgan' under runs/dcgan"),
        (["train", "dcgan", "--device", "tpu"], "unknown --device 'tpu'"),
        (["sample", "dcgan"], "no runs of 'dcgan' under runs/dcgan"),
        (["sample", "dcgan", "--run", "."], "is not a gentool run folder"),
        (["info", "nothing"], "unknown model 'nothing'"),
        (["data", "make", "clouds", "out"], "unknown built-in data set 'clouds'"),
    ],
)
def test_bad_input_is_one_line_that_says_what_to_do(in_tmp, args, text):
    assert_one_line_error(invoke(*args), 1, text)


def test_a_bad_toml_file_names_the_problem(in_tmp):
    (in_tmp / "bad.toml").write_text("image_size = = 3\n")
    result = invoke("train", "dcgan", "--config", "bad.toml")
    assert_one_line_error(result, 1, "config file bad.toml is not valid TOML")


def test_usage_errors_exit_with_2(in_tmp):
    assert invoke("train").exit_code == 2
    assert invoke("sample", "dcgan", "--n", "0").exit_code == 2


def test_info_lists_every_config_field_with_its_description():
    result = invoke("info", "dcgan", "--json")
    assert result.exit_code == 0
    described = json.loads(result.output)
    fields = {field["name"]: field for field in described["config"]}
    assert fields["image_size"]["default"] == 64
    assert fields["beta1"]["accepted"] == "float in [0, 0.9999]"
    assert all(field["help"] for field in fields.values())
    assert described["capabilities"] == ["sample"]
    table = invoke("info", "dcgan")
    assert table.exit_code == 0 and "latent_dim" in table.output


def test_every_command_has_help_with_an_example():
    for command in (["train"], ["sample"], ["list"], ["info"], ["data", "make"]):
        result = invoke(*command, "--help")
        assert result.exit_code == 0 and "Example" in result.output, command


def test_kernel_backend_is_validated_before_training(in_tmp, monkeypatch):
    monkeypatch.setenv("GENTOOL_KERNELS", "auto")  # the default, which --kernels overrides
    assert_one_line_error(
        invoke("train", "dcgan", "--kernels", "fastest"),
        1,
        "--kernels 'fastest' is not a kernel backend; use one of auto, triton, torch",
    )
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    result = invoke("train", "dcgan", "--kernels", "triton", "--device", "cpu")
    assert_one_line_error(result, 1, "--kernels triton cannot run here (the tensor is on cpu")
    assert not (in_tmp / "runs").exists()
