#!/usr/bin/env bash
# The GPU check in one call, within 8 minutes: the kernel tests run natively, the static report
# (every launch compiled for sm_80 and sm_90), the kernel and block benchmarks, training steps of
# dcgan and vae, and whether steps wait for data; everything lands in $OUT, and a verdict table closes it: each speed target of
# docs/benchmarks.md, the measured figure, met or not (also $OUT/verdict.json). For a machine
# whose image already has torch, triton, typer, rich, safetensors and pytest (no network needed).
#
#   OUT=/tmp/gpu-results bash benches/gpu.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-benches/results}"
mkdir -p "$OUT"
status=0
deadline=$((SECONDS + 465))  # 8 minutes, less the verdict's few seconds

step() {  # step NAME SECONDS COMMAND...: run one part within its limit and the deadline
    local name="$1" limit="$2"
    shift 2
    local left=$((deadline - SECONDS))
    ((limit > left)) && limit=$left
    echo "== $name (at most ${limit}s)"
    if ((limit <= 0)); then
        echo "   skipped: no time left" | tee "$OUT/$name.txt"
        status=1
        return
    fi
    if ! timeout "$limit" "$@" > "$OUT/$name.txt" 2>&1; then
        echo "   failed (exit $?), see $OUT/$name.txt"
        tail -n 5 "$OUT/$name.txt"
        status=1
    fi
}

# gentool.kernels and gentool.plugins are mapped folders: an editable install resolves them. Where
# pip cannot build offline, links put them in place and a metadata folder declares the models.
step install 60 python -m pip install --no-deps --no-build-isolation -e .
if ! python -c "import gentool.kernels, gentool.plugins.dcgan" 2> /dev/null; then
    ln -sfn ../kernels gentool/kernels
    ln -sfn ../plugins gentool/plugins
    metadata="$OUT/metadata/gentool-0.0.dist-info"
    mkdir -p "$metadata"
    printf 'Metadata-Version: 2.1\nName: gentool\nVersion: 0.0\n' > "$metadata/METADATA"
    python - "$metadata" <<'PY'
import pathlib, sys, tomllib

models = tomllib.loads(pathlib.Path("pyproject.toml").read_text())["project"]["entry-points"]
lines = ["[gentool.models]"] + [f"{name} = {target}" for name, target in models["gentool.models"].items()]
(pathlib.Path(sys.argv[1]) / "entry_points.txt").write_text("\n".join(lines) + "\n")
PY
    export PYTHONPATH="$PWD:$(dirname "$metadata")${PYTHONPATH:+:$PYTHONPATH}"
    echo "   running from source: gentool/kernels and gentool/plugins linked"
fi
{
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
    python -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)"
    date -u +%Y-%m-%dT%H:%MZ
} > "$OUT/environment.txt" 2>&1
cat "$OUT/environment.txt"

# The correctness tests natively; the static budgets are the next step's.
step kernel-tests 90 python -m pytest tests/kernels -q -p no:cacheprovider \
    --ignore=tests/kernels/test_compiled.py
step static-report 90 python -m gentool bench kernels --static --json "$OUT/static.json"
step bench-kernels-dcgan 60 python -m gentool bench kernels --sizes dcgan \
    --json "$OUT/kernels-dcgan.json"
step bench-kernels-large 45 python -m gentool bench kernels --sizes large \
    --json "$OUT/kernels-large.json"
step bench-convt-blocks 60 python -m pytest benches/test_convt_bn_relu.py -q -p no:cacheprovider \
    -k "eval-forward or conv-only" --benchmark-json "$OUT/convt-blocks.json"
for model in dcgan vae; do
    # bench train has no --json: its Python function writes the numbers.
    step "bench-train-$model" 45 python - "$model" "$OUT/train-$model.json" <<'PY'
import dataclasses, json, sys

import torch

from gentool.training.benchmark import bench_training
from gentool.registry import resolve

plugin = resolve(sys.argv[1]).plugin
results = bench_training(
    plugin,
    plugin.parse_config({}),
    batch_size=plugin.default_batch_size,
    device=torch.device("cuda"),
    variants=["eager", "compile", "fused"],
    steps=10,
)
rows = [dataclasses.asdict(result) for result in results]
json.dump({"model": sys.argv[1], "results": rows}, open(sys.argv[2], "w"), indent=2)
for row in rows:
    print(row)
PY
done

step data-prefetch 60 python benches/data_prefetch.py "$OUT/data-prefetch.json"

echo
grep -E "passed|failed" "$OUT/kernel-tests.txt" | tail -n 1
python benches/verdict.py "$OUT"
exit $status
