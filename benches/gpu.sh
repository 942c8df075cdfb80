#!/usr/bin/env bash
# The GPU check in one call: the kernel tests run natively, then the kernel and training
# benchmarks; everything lands in $OUT and a short table is printed last. For a machine whose
# image already has torch, triton, typer, rich, safetensors and pytest (no network needed).
#
#   OUT=/tmp/gpu-results bash benches/gpu.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-benches/results}"
mkdir -p "$OUT"
status=0

step() {  # step NAME SECONDS COMMAND...: run one part with a time limit, log it, remember failures
    local name="$1" limit="$2"
    shift 2
    echo "== $name"
    if ! timeout "$limit" "$@" > "$OUT/$name.txt" 2>&1; then
        echo "   failed (exit $?), see $OUT/$name.txt"
        tail -n 5 "$OUT/$name.txt"
        status=1
    fi
}

# gentool.kernels and gentool.plugins are mapped folders: an editable install resolves them. Where
# pip cannot build offline, links put them in place and a metadata folder declares the models.
step install 120 python -m pip install --no-deps --no-build-isolation -e .
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

step kernel-tests 240 python -m pytest tests/kernels -q -p no:cacheprovider
step bench-kernels-dcgan 60 python -m gentool bench kernels --sizes dcgan --json "$OUT/kernels-dcgan.json"
step bench-kernels-large 90 python -m gentool bench kernels --sizes large --json "$OUT/kernels-large.json"
step bench-kernels-large-bf16 90 python -m gentool bench kernels --sizes large --dtype bfloat16 \
    --json "$OUT/kernels-large-bf16.json"
step bench-convt-blocks 300 python -m pytest benches/test_convt_bn_relu.py -q -p no:cacheprovider \
    --benchmark-json "$OUT/convt-blocks.json"
step bench-train-dcgan 120 python -m gentool bench train dcgan --steps 10
step bench-train-vae 60 python -m gentool bench train vae --steps 10

echo
grep -E "passed|failed" "$OUT/kernel-tests.txt" | tail -n 1
python - "$OUT" <<'PY'
import json, pathlib, sys

out = pathlib.Path(sys.argv[1])
print(f"{'op':<11}{'shape':<11}{'dtype':<9}{'backend':<9}{'ok':<8}{'ms':>9}{'GB/s':>8}{'%copy':>7}{'×eager':>8}")
for path in sorted(out.glob("kernels-*.json")):
    report = json.loads(path.read_text())
    for row in report["results"]:
        def show(key, template):
            return template.format(row[key]) if row[key] is not None else "–"
        shape = "x".join(map(str, row["shape"]))
        print(f"{row['op']:<11}{shape:<11}{row['dtype']:<9}{row['backend']:<9}{row['status']:<8}"
              f"{show('median_ms', '{:.4f}'):>9}{show('gbps', '{:.0f}'):>8}"
              f"{show('ceiling_percent', '{:.0f}'):>7}{show('speedup', '{:.2f}'):>8}")
PY
python - "$OUT/convt-blocks.json" <<'PY'
import json, pathlib, sys, collections

path = pathlib.Path(sys.argv[1])
if path.exists():
    times = collections.defaultdict(dict)
    for case in json.loads(path.read_text())["benchmarks"]:
        backend, block, mode = case["param"].split("-", 2)
        times[block, mode][backend] = (case["stats"]["median"] * 1e3, case["extra_info"].get("peak MB"))
    print(f"\n{'block':<7}{'mode':<15}{'eager ms':>10}{'compile':>10}{'triton':>10}{'×eager':>8}{'×compile':>10}{'peak MB e/t':>14}")
    for (block, mode), row in times.items():
        ms = {name: row.get(name, (None, None))[0] for name in ("eager", "compile", "triton")}
        mb = {name: row.get(name, (None, None))[1] for name in ("eager", "triton")}
        ratio = lambda a, b: f"{ms[a] / ms[b]:.2f}" if ms[a] and ms[b] else "–"
        show = lambda value: f"{value:.3f}" if value else "–"
        print(f"{block:<7}{mode:<15}{show(ms['eager']):>10}{show(ms['compile']):>10}{show(ms['triton']):>10}"
              f"{ratio('eager', 'triton'):>8}{ratio('compile', 'triton'):>10}{str(mb['eager']) + '/' + str(mb['triton']):>14}")
PY
for name in bench-train-dcgan bench-train-vae; do
    [ -f "$OUT/$name.txt" ] && cat "$OUT/$name.txt"
done
exit $status
