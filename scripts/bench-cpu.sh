#!/usr/bin/env bash
# loco vs PyTorch on the CPU: full training steps (zero grads, forward+backward, grad-norm
# clip, AdamW) of the same Llama on the same shapes, fp32, back to back, repeated.
#
#   scripts/bench-cpu.sh [--repeats 3] [--steps 20] [--warmup 3] [--threads N] [--out DIR]
#                        [--wait-load L [--wait-max S]]
#
# Shapes: (a) configs/tiny.json (d128 L4 H4 KV2 ffn384, seq 128, micro-batch 16);
#         (b) a larger CPU model (d256 L4 H4 KV4 ffn768, seq 256, micro-batch 8).
# Each repeat runs loco then PyTorch for both shapes; the table shows the median tokens/s
# over the repeats. Builds loco (Release, CPU only) into $LOCO_BUILD_DIR (default
# build-bench) first. Needs a python3 with torch (tries /usr/bin/python3, then python3).
# Every run's JSON lands in --out (default: a fresh directory under /tmp). On a shared machine,
# --wait-load L first waits (at most --wait-max seconds, default 1800) for the 1-minute load
# average to drop below L; timings taken under load mostly measure the other jobs.
set -euo pipefail
cd "$(dirname "$0")/.."
repeats=3 steps=20 warmup=3 threads=$(nproc) out="" wait_load="" wait_max=1800
while [[ $# -gt 0 ]]; do
  case "$1" in
    --repeats) repeats=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    --warmup) warmup=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --wait-load) wait_load=$2; shift 2 ;;
    --wait-max) wait_max=$2; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
build=${LOCO_BUILD_DIR:-build-bench}
[[ -n "$out" ]] || out=$(mktemp -d /tmp/loco-bench-cpu.XXXXXX)
mkdir -p "$out"

python=""
for p in /usr/bin/python3 python3; do
  if command -v "$p" >/dev/null && "$p" -c "import torch" 2>/dev/null; then python=$p; break; fi
done
[[ -n "$python" ]] || { echo "error: no python3 with torch found" >&2; exit 1; }

echo "== building loco (Release, CPU) in $build"
cmake -S . -B "$build" -G Ninja -DLOCO_ENABLE_CUDA=OFF -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" --target loco -j "$(nproc)" >/dev/null

declare -A shape_args
shape_args[tiny]=""
shape_args[d256]="--set model.d_model=256 --set model.n_layers=4 --set model.n_heads=4 \
--set model.n_kv_heads=4 --set model.d_ff=768 --set training.seq_len=256 \
--set training.micro_batch=8"
shapes=(tiny d256)

if [[ -n "$wait_load" ]]; then
  echo "== waiting for the 1-minute load average to drop below $wait_load (at most ${wait_max}s)"
  for ((waited = 0; waited < wait_max; waited += 10)); do
    awk -v limit="$wait_load" '{ exit !($1 < limit) }' /proc/loadavg && break
    sleep 10
  done
fi

export OMP_NUM_THREADS=$threads
echo "== $(date -u +%FT%TZ) | $(lscpu | sed -n 's/^Model name: *//p') | $(nproc) cores | \
threads $threads | load: $(cut -d' ' -f1-3 /proc/loadavg)"
for ((r = 1; r <= repeats; r++)); do
  for s in "${shapes[@]}"; do
    # shellcheck disable=SC2086
    "$build/loco" bench configs/tiny.json ${shape_args[$s]} --steps "$steps" --warmup "$warmup" \
      --json "$out/loco-$s-$r.json" >"$out/loco-$s-$r.txt"
    # shellcheck disable=SC2086
    "$python" scripts/torch_llama_bench.py --config configs/tiny.json ${shape_args[$s]} \
      --steps "$steps" --warmup "$warmup" --threads "$threads" --json "$out/torch-$s-$r.json" \
      >"$out/torch-$s-$r.txt"
    printf '   repeat %d %-5s loco %8.0f tok/s   torch %8.0f tok/s   (load %s)\n' "$r" "$s" \
      "$("$python" -c "import json;print(json.load(open('$out/loco-$s-$r.json'))['tokens_per_s'])")" \
      "$("$python" -c "import json;print(json.load(open('$out/torch-$s-$r.json'))['tokens_per_s'])")" \
      "$(cut -d' ' -f1 /proc/loadavg)"
  done
done

"$python" - "$out" "$repeats" <<'EOF'
import json, statistics, sys
out, repeats = sys.argv[1], int(sys.argv[2])
names = {"tiny": "tiny (d128 L4 H4/2 ffn384, T128, B16)", "d256": "d256 L4 H4/4 ffn768, T256, B8"}
print()
print("| model | params | loco tok/s | torch tok/s | loco / torch | CPU-time ratio |")
print("|---|---:|---:|---:|---:|---:|")
summary = {}
for s in ("tiny", "d256"):
    lo = [json.load(open(f"{out}/loco-{s}-{r}.json")) for r in range(1, repeats + 1)]
    to = [json.load(open(f"{out}/torch-{s}-{r}.json")) for r in range(1, repeats + 1)]
    l = statistics.median(x["tokens_per_s"] for x in lo)
    t = statistics.median(x["tokens_per_s"] for x in to)
    # CPU seconds per step (all threads): less sensitive to other jobs than wall time
    lc = statistics.median(x["cpu_seconds_per_step"] for x in lo)
    tc = statistics.median(x["cpu_seconds_per_step"] for x in to)
    summary[s] = {"loco_tokens_per_s": l, "torch_tokens_per_s": t, "ratio": l / t,
                  "loco_cpu_s_per_step": lc, "torch_cpu_s_per_step": tc,
                  "loco_runs": [x["tokens_per_s"] for x in lo],
                  "torch_runs": [x["tokens_per_s"] for x in to]}
    print(f"| {names[s]} | {lo[0]['parameters']:,} | {l:,.0f} | {t:,.0f} | {l / t:.2f}x "
          f"| {tc / lc:.2f}x |")
json.dump(summary, open(f"{out}/summary.json", "w"), indent=2)
print(f"\n(median of {repeats} repeats; CPU-time ratio = torch CPU s/step over loco's, all "
      f"threads; runs in {out})")
EOF
echo "== load after: $(cut -d' ' -f1-3 /proc/loadavg)"
