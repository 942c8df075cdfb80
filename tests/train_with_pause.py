"""`gentool` with a pause at one point of a checkpoint save, for tests/test_kill_and_resume.py.

GENTOOL_TEST_PAUSE=POINT:N makes the Nth save that reaches POINT write the file named by
GENTOOL_TEST_PAUSED and wait there, so that the test can kill the process inside the save. The
points, in the order a save reaches them:

    model-written            model.safetensors written in the staging folder
    optim-written            optim.safetensors written too
    checkpoint-renamed       the staging folder renamed into place, run.json not yet replaced
    run-json-staged          run.json's replacement written and fsynced, not yet renamed
    removing-old-checkpoint  run.json committed, the previous checkpoint folder not yet removed

GENTOOL_TEST_STEPPED names a file that holds the number of the last training step, so that the
test knows how far training is before it sends a signal at a random moment.

Training runs on one thread with denormals flushed, as the `tiny_cpu_training` fixture does: the
layers are too small to split, and the interrupted and the uninterrupted runs must compute alike.
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import torch

from gentool import atomic, checkpoint, run_files
from gentool.__main__ import main
from gentool.training import logbook, session

PAUSE_POINT, _, PAUSE_COUNT = os.environ.get("GENTOOL_TEST_PAUSE", "").partition(":")
reached: Counter[str] = Counter()


def pause_at(point: str) -> None:
    if point != PAUSE_POINT:
        return
    reached[point] += 1
    if reached[point] == int(PAUSE_COUNT):
        Path(os.environ["GENTOOL_TEST_PAUSED"]).write_text(point)
        while True:
            time.sleep(1)


def write_tensor_file(path, *args, **kwargs):
    digest = write_tensors(path, *args, **kwargs)
    pause_at("model-written" if Path(path).name == run_files.MODEL_FILE else "optim-written")
    return digest


def write_text(path, text):
    pause_at("checkpoint-renamed")
    write_text_atomically(path, text)


def fsync_path(path):
    sync(path)
    if path.name.startswith(f".{run_files.RUN_FILE}."):
        pause_at("run-json-staged")


def rmtree(path, *args, **kwargs):
    if Path(path).name.startswith(run_files.CHECKPOINT_PREFIX) and Path(path).exists():
        pause_at("removing-old-checkpoint")
    remove_tree(path, *args, **kwargs)


class SignallingStepLog(logbook.StepLog):
    def add(self, step, **kwargs):
        stopping = super().add(step, **kwargs)
        Path(os.environ["GENTOOL_TEST_STEPPED"]).write_text(str(step.global_step))
        return stopping


write_tensors, write_text_atomically = checkpoint.write_tensor_file, checkpoint.write_text
sync, remove_tree = atomic.fsync_path, checkpoint.shutil.rmtree
checkpoint.write_tensor_file, checkpoint.write_text = write_tensor_file, write_text
atomic.fsync_path = fsync_path
checkpoint.shutil = SimpleNamespace(rmtree=rmtree)
session.StepLog = SignallingStepLog

if __name__ == "__main__":
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    sys.argv = ["gentool", *sys.argv[1:]]
    main()
