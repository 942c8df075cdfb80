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

from gentool import atomic, checkpoint, train
from gentool.cli import main

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


def save_file(tensors, filename, *args, **kwargs):
    save_tensors(tensors, filename, *args, **kwargs)
    name = Path(filename).name
    pause_at("model-written" if name == checkpoint.MODEL_FILE else "optim-written")


def write_text(path, text):
    pause_at("checkpoint-renamed")
    write_text_atomically(path, text)


def fsync_path(path):
    sync(path)
    if path.name.startswith(f".{checkpoint.RUN_FILE}."):
        pause_at("run-json-staged")


def rmtree(path, *args, **kwargs):
    if Path(path).name.startswith(checkpoint.CHECKPOINT_PREFIX) and Path(path).exists():
        pause_at("removing-old-checkpoint")
    remove_tree(path, *args, **kwargs)


class SignallingMetricsLog(train.MetricsLog):
    def append(self, values):
        super().append(values)
        Path(os.environ["GENTOOL_TEST_STEPPED"]).write_text(str(values["step"]))


save_tensors, write_text_atomically = checkpoint.save_file, checkpoint.write_text
sync, remove_tree = atomic.fsync_path, checkpoint.shutil.rmtree
checkpoint.save_file, checkpoint.write_text, atomic.fsync_path = save_file, write_text, fsync_path
checkpoint.shutil = SimpleNamespace(rmtree=rmtree)
train.MetricsLog = SignallingMetricsLog

if __name__ == "__main__":
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    sys.argv = ["gentool", *sys.argv[1:]]
    main()
