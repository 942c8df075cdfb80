"""The data pipeline at scale: first decode, restart on the cache, batch gathering, memory.

    python benches/data_pipeline.py FOLDER [--image-size 64] [--json OUT.json]

FOLDER is a folder of images, e.g. `gentool data make faces FOLDER --n 100000`. Each stage runs
in a fresh process, with its own empty cache for the first decode, so that no stage inherits
another's memory:

- decode: `load_dataset` on an empty cache: seconds, files/s, peak memory.
- restart: `gentool train dcgan --data FOLDER` on the warm cache, from the process's start to the
  start and to the end of its first training step: seconds, peak memory.
- gather: one epoch of batches (64 images each) from the cached set on the CPU: images/s, peak
  memory.

Memory is reported twice: the peak resident set (VmHWM, which counts pages of a mapped file the
kernel may drop at will) and the peak of the anonymous part (RssAnon, sampled every 5 ms), the
memory the process really holds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

_SAMPLER = """
import os, threading, time
peak_anon = 0
def _sample():
    global peak_anon
    while True:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("RssAnon:"):
                    peak_anon = max(peak_anon, int(line.split()[1]) * 1024)
        time.sleep(0.005)
threading.Thread(target=_sample, daemon=True).start()
def peaks():
    time.sleep(0.02)
    with open("/proc/self/status") as status:
        hwm = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))
    return {"peak_rss_bytes": hwm, "peak_anon_bytes": peak_anon}
"""

_DECODE = """
from gentool.data import load_dataset
started = time.perf_counter()
dataset = load_dataset(FOLDER, image_size=IMAGE_SIZE)
seconds = time.perf_counter() - started
print(json.dumps({"images": len(dataset), "seconds": seconds, **peaks()}))
"""

_RESTART = """
import gentool.training.loop as loop
from gentool.__main__ import main
run_step = loop.run_step
def first_step(session, batch):
    started_at = time.time()
    run_step(session, batch)
    finished_at = time.time()
    print(json.dumps({"started_at": started_at, "finished_at": finished_at, **peaks()}), flush=True)
    os._exit(0)
loop.run_step = first_step
sys.argv = ["gentool", "train", "dcgan", "--data", FOLDER, "--run-dir", RUN_DIR,
            "-o", f"image_size={IMAGE_SIZE}", "--epochs", "1", "--device", "cpu"]
main()
"""

_GATHER = """
import torch
from gentool.data import BatchLoader, load_dataset
dataset = load_dataset(FOLDER, image_size=IMAGE_SIZE)
loader = BatchLoader(dataset, 64, device=torch.device("cpu"), value_range=(-1.0, 1.0), seed=0)
started = time.perf_counter()
images = sum(batch.images.shape[0] for batch in loader.epoch(0))
seconds = time.perf_counter() - started
print(json.dumps({"images": images, "seconds": seconds, **peaks()}))
"""


def run_stage(body: str, folder: Path, image_size: int, cache: Path, run_dir: Path) -> dict:
    script = "\n".join(
        [
            "import json, os, sys, time",
            textwrap.dedent(_SAMPLER),
            f"FOLDER, IMAGE_SIZE, RUN_DIR = {str(folder)!r}, {image_size}, {str(run_dir)!r}",
            textwrap.dedent(body),
        ]
    )
    environment = {**os.environ, "GENTOOL_CACHE": str(cache)}
    started = time.time()
    done = subprocess.run(
        [sys.executable, "-c", script], env=environment, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"stage failed:\n{done.stderr[-4000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if "finished_at" in result:
        result["seconds_to_first_step"] = result.pop("started_at") - started
        result["seconds"] = result.pop("finished_at") - started
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--json", type=Path)
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        cache, runs = Path(scratch, "cache"), Path(scratch, "runs")
        results = {}
        for stage, body in (("decode", _DECODE), ("restart", _RESTART), ("gather", _GATHER)):
            run_dir = runs / stage
            results[stage] = run_stage(body, arguments.folder, arguments.image_size, cache, run_dir)
            print(stage, json.dumps(results[stage]), flush=True)
        results["decode"]["files_per_second"] = (
            results["decode"]["images"] / results["decode"]["seconds"]
        )
        results["gather"]["images_per_second"] = (
            results["gather"]["images"] / results["gather"]["seconds"]
        )
        results["cache_bytes"] = sum(path.stat().st_size for path in cache.rglob("*"))
    print(json.dumps(results, indent=2))
    if arguments.json:
        arguments.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
