"""kill -9 at random moments and inside every step of a checkpoint save; SIGTERM; resume each time.

The training runs in a subprocess (tests/train_with_pause.py), killed again and again. After each
kill the checkpoint that run.json names must be complete, its files must match the digests run.json
recorded, it may only be the one committed before the kill or a newer one, and the logged metrics
of every committed step must still be there. At the end the run, resumed after every kill, must
hold exactly the weights, optimizer state and metrics of a run that was never interrupted.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from safetensors.torch import load_file

from gentool.checkpoint import RunFolder
from tests.conftest import TINY_DCGAN_ARGS

WRAPPER = Path(__file__).with_name("train_with_pause.py")
EPOCHS = 30
STEPS = EPOCHS * 2  # 32 images in batches of 16
NEW_RUN = [
    "train", "dcgan", *TINY_DCGAN_ARGS, "--limit", "32", "-b", "16", "--device", "cpu",
    "--epochs", str(EPOCHS),
]  # fmt: skip
SAVE_POINTS = [
    "model-written",
    "optim-written",
    "checkpoint-renamed",
    "run-json-staged",
    "removing-old-checkpoint",
]
RANDOM_KILLS = 3
# A random kill lands a few steps past the last commit, plus up to 20 ms, never in the last
# steps: the run must still be training when the signal arrives, however fast this machine is.
MAX_STEPS_AHEAD = 4
FINAL_STEPS_KEPT = 10
TIMEOUT = 120  # seconds for any one process to reach the point where it is stopped


@dataclass(frozen=True)
class Committed:
    """What run.json named at one moment, and the checkpoint files' content."""

    step: int
    checkpoint: str
    digests: dict[str, str]


def committed(run_dir: Path) -> Committed | None:
    """The committed checkpoint, checked to be complete and unchanged; None before the first."""
    if not (run_dir / "run.json").exists():
        return None
    record = RunFolder(run_dir).read()
    folder = run_dir / record.checkpoint
    digests = {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in folder.iterdir()
    }
    assert digests == record.checkpoint_sha256  # every file there, none changed since the save
    for path in folder.iterdir():
        load_file(path)
    return Committed(record.progress.global_step, record.checkpoint, digests)


def logged_steps(run_dir: Path) -> list[int]:
    path = run_dir / "metrics.jsonl"
    steps = []
    for line in path.read_text().splitlines() if path.exists() else []:
        with contextlib.suppress(ValueError):  # a line torn by the kill
            steps.append(json.loads(line)["step"])
    return steps


def wait_for(condition, process: subprocess.Popen, what: str, log: Path) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        assert process.poll() is None, (
            f"training ended (status {process.returncode}) before {what}: {log.read_text()}"
        )
        assert time.monotonic() < deadline, f"no {what} after {TIMEOUT} s"
        time.sleep(0.01)


def reached_step(path: Path, step: int):
    def reached() -> bool:
        try:
            return int(path.read_text()) >= step
        except (FileNotFoundError, ValueError):  # not written yet, or caught mid-write
            return False

    return reached


def start(tmp_path: Path, run_dir: Path, pause: str = "") -> tuple[subprocess.Popen, bool]:
    """Start training, resuming when there is a committed run; say whether it resumed."""
    resuming = (run_dir / "run.json").exists()
    resume = ["train", "dcgan", "--resume", "--run-dir", str(run_dir)]
    args = resume if resuming else [*NEW_RUN, "--run-dir", str(run_dir)]
    env = {
        **os.environ,
        "GENTOOL_TEST_PAUSE": pause,
        "GENTOOL_TEST_PAUSED": str(tmp_path / "paused"),
        "GENTOOL_TEST_STEPPED": str(tmp_path / "stepped"),
    }
    log = (tmp_path / "log.txt").open("w")
    process = subprocess.Popen(
        [sys.executable, str(WRAPPER), *args], cwd=tmp_path, env=env, stdout=log, stderr=log
    )
    return process, resuming


def test_kills_at_any_moment_lose_nothing_and_every_run_resumes(tmp_path):
    run_dir = tmp_path / "run"
    schedule = [f"pause:{point}" for point in SAVE_POINTS] + ["random"] * RANDOM_KILLS
    random.Random(11).shuffle(schedule)
    # The first kill lands in the first save of the new run: nothing is committed yet.
    schedule = ["pause:model-written:1", *schedule, "sigterm"]
    rng = random.Random(7)
    log = tmp_path / "log.txt"
    previous = None
    resumes = 0
    for fault in schedule:
        for flag in ("paused", "stepped"):
            (tmp_path / flag).unlink(missing_ok=True)
        kind, _, point = fault.partition(":")
        if kind == "pause" and ":" not in point:
            point = f"{point}:{rng.randint(1, 2)}"
        process, resumed = start(tmp_path, run_dir, pause=point if kind == "pause" else "")
        resumes += resumed
        if kind == "pause":
            wait_for((tmp_path / "paused").exists, process, f"a pause at {point}", log)
        else:
            done = previous.step if previous else 0
            step = min(done + rng.randint(1, MAX_STEPS_AHEAD), STEPS - FINAL_STEPS_KEPT)
            assert step > done, "the schedule ran past the steps kept for the last kills"
            wait_for(reached_step(tmp_path / "stepped", step), process, f"step {step}", log)
            time.sleep(rng.uniform(0, 0.02))
        process.send_signal(signal.SIGTERM if kind == "sigterm" else signal.SIGKILL)
        status = process.wait(TIMEOUT)

        now = committed(run_dir)
        if previous is not None:  # what was committed is still there, or a newer commit replaced it
            assert now is not None and now.step >= previous.step, fault
            if now.checkpoint == previous.checkpoint:
                assert now.digests == previous.digests, fault
        if now is not None:
            assert [s for s in logged_steps(run_dir) if s <= now.step] == list(
                range(1, now.step + 1)
            ), fault
        if kind == "sigterm":
            assert status == 130, (tmp_path / "log.txt").read_text()
            assert "stopped: SIGTERM" in (tmp_path / "log.txt").read_text()
            assert now.step == max(logged_steps(run_dir))  # saved at the step it stopped on
        previous = now

    finished, resumed = start(tmp_path, run_dir)
    assert finished.wait(TIMEOUT) == 0, (tmp_path / "log.txt").read_text()
    # Only the first kill, inside the new run's first save, can leave nothing to resume.
    assert resumes + resumed >= len(schedule) - 1
    assert RunFolder(run_dir).leftovers() == []

    # The run that never stopped trains in a process of its own too: nothing that other tests
    # left in this process (thread or floating-point settings) can tell the two apart.
    straight, _ = start(tmp_path, tmp_path / "straight")
    assert straight.wait(TIMEOUT) == 0, (tmp_path / "log.txt").read_text()
    final, expected = committed(run_dir), committed(tmp_path / "straight")
    assert final.step == expected.step == STEPS
    assert final.digests == expected.digests  # bit for bit the weights of an uninterrupted run
    metrics = (run_dir / "metrics.jsonl").read_text()
    assert metrics == (tmp_path / "straight" / "metrics.jsonl").read_text()


pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
