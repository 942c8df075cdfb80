"""Bad command lines, one table: each is refused with an error that names the option and what it
accepts, exit status 1 (bad input) or 2 (a malformed command line), no traceback, nothing written.

To cover a new command or option, add a row to BAD_INPUT: (arguments, exit status, a fragment of
the message). tests/cli/test_commands.py holds the first such table; docs/reliability.md counts
both.
"""

from __future__ import annotations

import os
import re

import pytest
import torch
from typer.testing import CliRunner

from gentool.cli import app
from tests.conftest import TINY_DCGAN_ARGS

TINY_RUN = [*TINY_DCGAN_ARGS, "--device", "cpu"]

BAD_INPUT: list[tuple[list[str], int, str]] = [
    # model config: wrong type, out of range, not a number, unknown key, malformed
    (["train", "dcgan", "-o", "lr=nan"], 1, "'lr' of dcgan must be float >= 0, finite and within"),
    (["train", "dcgan", "--lr", "inf"], 1, "'lr' of dcgan must be float >= 0, finite and within"),
    (["train", "dcgan", "--lr", "1e-3", "-o", "lr=2e-3"], 1, "--lr and -o lr= both set"),
    (["train", "dcgan", "-o", "beta1=1.5"], 1, "option 'beta1' of dcgan must be float in [0,"),
    (["train", "gan", "-o", "d_steps=1000"], 1, "option 'd_steps' of gan must be int in [1, 100]"),
    (["train", "dcgan", "-o", "latent_dim=0"], 1, "option 'latent_dim' of dcgan must be int >= 1"),
    (["train", "dcgan", "-o", "image_size=8"], 1, "option 'image_size' of dcgan must be int >= 16"),
    (["train", "vae", "-o", "image_size=7"], 1, "option 'image_size' of vae must be int >= 16"),
    (["train", "conv-ae", "-o", "image_size=20"], 1, "image_size must be a power of two"),
    (["train", "gan", "-o", "g_hidden="], 1, "g_hidden needs at least one hidden layer width"),
    (["train", "stacked-ae", "-o", "hidden=0,a"], 1, "'hidden' of stacked-ae must be list of int"),
    (["train", "dcgan", "-o", "=3"], 1, "expected key=value after -o, got '=3'"),
    (["train", "dcgan", "--config", "."], 1, "config file . is a folder: give a TOML file"),
    (
        ["train", "dcgan", "--config", "list.toml"],
        1,
        "--config list.toml: option 'image_size' of dcgan must be int",
    ),
    (
        ["train", "dcgan", "--config", "section.toml"],
        1,
        "--config section.toml: unknown option 'model' for dcgan",
    ),
    (
        ["train", "dcgan", "--config", "tiny.toml"],
        1,
        "config file tiny.toml holds 1e-400, a number float32 rounds to 0: write 0, or a larger",
    ),
    (["train", "dcgan", "--lr", "1e-400"], 1, "'lr' of dcgan must be float >= 0, not so small"),
    (
        ["train", "dcgan", "--config", "quoted.toml"],
        1,
        "--config quoted.toml: option 'lr' of dcgan must be float >= 0, got '0.001': write "
        "numbers and true or false without quotes",
    ),
    (
        ["train", "dcgan", "--config", "odd_size.toml"],
        1,
        "--config odd_size.toml: invalid config for dcgan: image_size must be a power of two",
    ),
    (
        ["train", "dcgan", "--config", "dated.toml"],
        1,
        "--config dated.toml: option 'lr' of dcgan must be float >= 0, got 1979-05-27",
    ),
    (  # the clash is -o's, so the file goes unnamed
        ["train", "dcgan", "--config", "good.toml", "-o", "image_size=48"],
        1,
        "error: invalid config for dcgan: image_size must be a power of two",
    ),
    (["train", "dcgan", "-c", "list.toml", "-c", "tiny.toml"], 1, "--config was given 2 times"),
    (["train", "ae", "-c", "quoted_item.toml"], 1, "must be list of int >= 1, got [8, '8']: write"),
    (["train", "ae", "-c", "switch.toml"], 1, "option 'linear' of ae must be bool, got 3"),
    (["train", "ae", "-c", "latin1.toml"], 1, "latin1.toml is not UTF-8 text (byte 0xe9 at offset"),
    (["train", "ae", "-c", "big.toml"], 1, "big.toml is not a model config: it is larger than 1.0"),
    (["train", "ae", "-o", "--lr=1"], 1, "-o takes a config field as key=value, got '--lr=1'"),
    (["train", "ae", "-o", "hidden=[8,8]"], 1, "between commas, without brackets; got '[8,8]'"),
    (["train", "ae", "-o", "hidden=0"], 1, "'hidden' of ae must be list of int >= 1, got [0]"),
    (["train", "ae", "-o", "code_dim=4_0"], 1, "'code_dim' of ae must be int >= 1, got '4_0'"),
    (["train", "ae", "-o", "k" * 300 + "=1"], 1, f"unknown option '{'k' * 78}… for ae; known"),
    (["train", "dcgan", "--config", ""], 1, "--config needs a file name, and was given an empty"),
    # data
    (["train", "dcgan", "--data", "notes.txt"], 1, "cannot read 'notes.txt': give a folder"),
    (["train", "dcgan", "--data", "empty"], 1, "no images found in 'empty'"),
    (["train", "dcgan", "--data", "builtin:cats"], 1, "unknown built-in data set 'cats'"),
    (["train", "cgan", "--data", "builtin:faces"], 1, "this model needs class labels"),
    (["train", "dcgan", "--limit", "0"], 1, "--limit must be at least 1, got 0"),
    (
        ["train", "dcgan", *TINY_RUN, "--limit", "16", "-b", "32"],
        1,
        "the data has 16 images, fewer than one batch of 32: lower --batch-size or add images",
    ),
    # training options and conflicting flags
    (["train", "dcgan", "-b", "0"], 2, "Invalid value for '--batch-size' / '-b'"),
    (["train", "dcgan", "-b", "many"], 2, "Invalid value for '--batch-size' / '-b'"),
    (["train", "dcgan", "--epochs", "0"], 2, "Invalid value for '--epochs' / '-e'"),
    (["train", "dcgan", "--bogus"], 2, "No such option: --bogus"),
    (["train", "dcgan", "--run-dir", "notes.txt"], 1, "--run-dir notes.txt is a file"),
    (["train", "dcgan", "--overwrite"], 1, "--overwrite needs --run-dir, the run to replace"),
    (
        ["train", "dcgan", "--resume", "--overwrite", "--run-dir", "run"],
        1,
        "--overwrite and --resume contradict each other",
    ),
    (["train", "dcgan", "--resume", "--seed", "3"], 1, "--seed cannot be given with --resume"),
    (["train", "dcgan", "--ema", "1.5"], 1, "--ema 1.5 must lie between 0 and 1, e.g. 0.999"),
    (["train", "dcgan", "--ema", "nan"], 1, "--ema nan must lie between 0 and 1"),
    (["train", "dcgan", "--nproc", "0"], 2, "Invalid value for '--nproc'"),
    (["train", "dcgan", "--nproc", "2", "-b", "3"], 1, "--batch-size 3 does not split over 2"),
    (["train", "dcgan", "--resume", "--run-dir", "empty"], 1, "empty is not a gentool run folder"),
    (["train", "dcgan", "--device", "meta"], 1, "--device meta is not supported: use auto, cpu"),
    (["train", "dcgan", "--device", "mps"], 1, "--device mps is not supported: use auto, cpu"),
    (["train", "dcgan", "--seed", "-1"], 1, "--seed must be between 0 and 9223372036854775807"),
    (["train", "dcgan", "--log-every", "0"], 2, "Invalid value for '--log-every'"),
    (
        ["train", "dcgan", "--config", "pipe.toml"],
        1,
        "cannot read config file pipe.toml: not a regular",
    ),
    (["train", "dcgan", "-o", "image_size=1073741824"], 1, "image_size 1073741824 is out of"),
    (["train", "dcgan", "--limit", "1000000000000"], 1, "1000000000000 built-in images of 64×64"),
    (["train", "dcgan", "--kernels", "triton", "--compile"], 1, "--kernels triton and --compile"),
    (["sample", "dcgan", "--device", "meta"], 1, "--device meta is not supported"),
    (["data", "make", "faces", "notes.txt"], 1, "notes.txt is a file: choose a new or empty"),
    (["train", "dcgan", "--resume", "--run-dir", "damaged"], 1, "run.json is damaged"),
    # the other commands
    (["sample", "dcgan", "--format", "gif"], 1, "--format must be png or npz, got 'gif'"),
    (["sample", "dcgan", "--n", "5000"], 2, "Invalid value for '--n' / '-n'"),
    (["sample", "dcgan", "--run", "damaged"], 1, "run.json is damaged"),
    (["interpolate", "dcgan", "--method", "cubic"], 1, "--method must be lerp or slerp"),
    (["interpolate", "dcgan", "--steps", "1"], 2, "Invalid value for '--steps'"),
    (["reconstruct", "ae", "--n", "0"], 2, "Invalid value for '--n' / '-n'"),
    (["encode", "ae"], 2, "Missing option '--out'"),
    (["data", "make", "faces", "out", "--size", "4"], 2, "Invalid value for '--size'"),
    (["data", "make", "faces", "full"], 1, "full is not empty: choose a new or empty folder"),
    (["eval", "dcgan", "--metrics", "bogus"], 1, "unknown --metrics bogus: choose from fid"),
    (["eval", "ae", "--metrics", "fid"], 1, "ae does not sample new images, so fid, kid and pr"),
    (["eval", "dcgan", "--n", "5"], 2, "Invalid value for '--n' / '-n'"),
    (["eval", "dcgan", "--run", "damaged"], 1, "run.json is damaged"),
    (["report", "empty"], 1, "empty is not a gentool run folder (no run.json)"),
    (["train", "dcgan", "--eval-every", "0"], 2, "Invalid value for '--eval-every'"),
    (["train", "dcgan", "--eval-metrics", "fid"], 1, "--eval-metrics set how --eval-every N"),
    (
        ["train", "dcgan", "--eval-every", "1", "--eval-metrics", "sharp"],
        1,
        "unknown --eval-metrics sharp: choose from fid, kid, pr, recon",
    ),
    (
        ["train", "ae", "--eval-every", "1", "--eval-features", "nope"],
        1,
        "unknown --eval-features 'nope': use builtin or inception",
    ),
    (["export", "dcgan", "--out", "g.onnx"], 2, "Missing option '--format'"),
    (["export", "dcgan", "--format", "onnx", "--out", ""], 1, "--out '.' names no file"),
    (["export", "dcgan", "--format", "onnx", "--out", "/"], 1, "--out '/' names no file"),
    (
        ["export", "dcgan", "--format", "onnx", "--out", "/dev/stdout"],
        1,
        "--out /dev/stdout leads to /dev/stdout: --out writes a regular file",
    ),
    (["export", "dcgan", "--format", "onnx"], 2, "Missing option '--out'"),
    (
        ["export", "dcgan", "--format", "tflite", "--out", "g"],
        1,
        "--format must be one of onnx, exported, torchscript; got 'tflite'",
    ),
    (
        ["export", "dcgan", "--format", "onnx", "--part", "generator", "--out", "g"],
        1,
        "--part must be decoder or encoder; got 'generator'",
    ),
    (
        ["export", "dcgan", "--format", "onnx", "--part", "encoder", "--out", "g"],
        1,
        "dcgan does not encode images, so it has no encoder to export; its decoder can be "
        "(--part decoder)",
    ),
    (
        ["export", "dcgan", "--format", "onnx", "--out", "damaged/run.json"],
        1,
        "--out damaged/run.json is a file of the run in damaged, which it would destroy",
    ),
    (
        ["export", "dcgan", "--format", "onnx", "--out", "damaged/run"],
        1,
        "--out's description damaged/run.json is a file of the run in damaged, which it would",
    ),
    (["bench", "kernels", "--op", "matmul"], 1, "--op must be one of reparam_kl, convt_bn_relu"),
    (["bench", "kernels", "--dtype", "int8"], 1, "--dtype must be one of float32, bfloat16"),
    (["bench", "train", "dcgan", "--variants", "turbo"], 1, "--variants must be one of eager"),
    (["bench", "train", "dcgan", "--variants", "eager,,amp"], 1, "takes distinct names between"),
    (["bench", "train", "dcgan", "--variants", "amp,amp"], 1, "takes distinct names between"),
    (["bench", "train", "dcgan", "-b", str(2**70)], 1, f"a batch of {2**70} images of 64×64"),
]
if not torch.cuda.is_available():
    BAD_INPUT.append(
        (["train", "dcgan", "--device", "cuda"], 1, "asked for CUDA, but no CUDA device")
    )

runner = CliRunner()


@pytest.fixture
def bad_files(in_tmp):
    (in_tmp / "notes.txt").write_text("not data")
    (in_tmp / "empty").mkdir()
    (in_tmp / "full").mkdir()
    (in_tmp / "full" / "keep.png").write_bytes(b"mine")
    (in_tmp / "damaged").mkdir()
    (in_tmp / "damaged" / "run.json").write_text("{")
    (in_tmp / "list.toml").write_text("image_size = [16, 32]\n")
    (in_tmp / "section.toml").write_text("[model]\nlr = 0.1\n")
    (in_tmp / "tiny.toml").write_text("lr = 1e-400\n")
    (in_tmp / "quoted.toml").write_text('lr = "0.001"\n')
    (in_tmp / "odd_size.toml").write_text("image_size = 48\n")
    (in_tmp / "dated.toml").write_text("lr = 1979-05-27\n")
    (in_tmp / "good.toml").write_text("latent_dim = 8\n")
    (in_tmp / "quoted_item.toml").write_text('hidden = [8, "8"]\n')
    (in_tmp / "switch.toml").write_text("linear = 3\n")
    (in_tmp / "latin1.toml").write_bytes("lr = 0.001  # café\n".encode("latin-1"))
    (in_tmp / "big.toml").write_text("lr = 0.001\n#" + "x" * 2**20)
    os.mkfifo(in_tmp / "pipe.toml")
    return in_tmp


def snapshot(folder) -> dict[str, bytes]:
    return {str(path): path.read_bytes() for path in folder.rglob("*") if path.is_file()}


@pytest.mark.parametrize(
    ("args", "exit_code", "fragment"), BAD_INPUT, ids=[" ".join(case[0]) for case in BAD_INPUT]
)
def test_bad_input_is_refused_with_a_message_that_names_it(bad_files, args, exit_code, fragment):
    before = snapshot(bad_files)
    result = runner.invoke(app, args)
    assert result.exit_code == exit_code, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    if exit_code == 1:  # our own errors: exactly one line
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), result.output
        assert fragment in lines[0]
    else:  # Typer's usage errors: usage, a hint and the message in a panel
        assert fragment in " ".join(re.sub("[│╭╮╰╯─]", " ", result.output).split())
    assert snapshot(bad_files) == before  # nothing written, nothing changed
    assert not (bad_files / "runs").exists()
