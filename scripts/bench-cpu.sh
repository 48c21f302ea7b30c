#!/usr/bin/env bash
# loco vs PyTorch on the CPU: full training steps (zero grads, forward+backward, grad-norm
# clip, AdamW) of the same Llama on the same shapes, fp32, back to back, repeated.
#
#   scripts/bench-cpu.sh [--repeats 3] [--steps 20] [--warmup 3] [--threads N] [--out DIR]
#                        [--wait-load L [--wait-max S]] [--no-torch-variants]
#
# Shapes: (a) configs/tiny.json (d128 L4 H4 KV2 ffn384, seq 128, micro-batch 16);
#         (b) a larger CPU model (d256 L4 H4 KV4 ffn768, seq 256, micro-batch 8).
# Each repeat runs loco then PyTorch for both shapes; the table shows the median tokens/s
# over the repeats. PyTorch runs as configured (torch.set_num_threads(N); its OpenBLAS keeps
# its own N threads) and, unless --no-torch-variants, also with 1 thread and with
# OPENBLAS_NUM_THREADS=1; the best of the three is reported too. Builds loco (Release, CPU only) into $LOCO_BUILD_DIR (default
# build-bench) first. Needs a python3 with torch (tries /usr/bin/python3, then python3).
# Every run's JSON lands in --out (default: a fresh directory under /tmp). On a shared machine,
# --wait-load L first waits (at most --wait-max seconds, default 1800) for the 1-minute load
# average to drop below L; timings taken under load mostly measure the other jobs.
set -euo pipefail
cd "$(dirname "$0")/.."
repeats=3 steps=20 warmup=3 threads=$(nproc) out="" wait_load="" wait_max=1800 variants=1
while [[ $# -gt 0 ]]; do
  case "$1" in
    --repeats) repeats=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    --warmup) warmup=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --wait-load) wait_load=$2; shift 2 ;;
    --wait-max) wait_max=$2; shift 2 ;;
    --no-torch-variants) variants=0; shift ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
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
cmake --preset cpu-only -B "$build" >/dev/null
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
    torch_run() {  # tag, threads, extra env...
      local tag=$1 n=$2
      shift 2
      # shellcheck disable=SC2086
      env "$@" OMP_NUM_THREADS="$n" "$python" scripts/torch_llama_bench.py --config configs/tiny.json \
        ${shape_args[$s]} --steps "$steps" --warmup "$warmup" --threads "$n" \
        --json "$out/$tag-$s-$r.json" >"$out/$tag-$s-$r.txt"
    }
    torch_run torch "$threads"
    if [[ $variants == 1 ]]; then
      torch_run torch1t 1
      torch_run torchob1 "$threads" OPENBLAS_NUM_THREADS=1
    fi
    tps() { "$python" -c "import json;print(json.load(open('$1'))['tokens_per_s'])"; }
    printf '   repeat %d %-5s loco %8.0f tok/s   torch %8.0f tok/s%s   (load %s)\n' "$r" "$s" \
      "$(tps "$out/loco-$s-$r.json")" "$(tps "$out/torch-$s-$r.json")" \
      "$([[ $variants == 1 ]] && printf '   torch 1 thread %8.0f   torch OPENBLAS_NUM_THREADS=1 %8.0f' \
        "$(tps "$out/torch1t-$s-$r.json")" "$(tps "$out/torchob1-$s-$r.json")")" \
      "$(cut -d' ' -f1 /proc/loadavg)"
  done
done

"$python" - "$out" "$repeats" "$variants" "$threads" <<'EOF'
import json, statistics, sys
out, repeats, variants, threads = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1", sys.argv[4]
names = {"tiny": "tiny (d128 L4 H4/2 ffn384, T128, B16)", "d256": "d256 L4 H4/4 ffn768, T256, B8"}
load = lambda tag, s: [json.load(open(f"{out}/{tag}-{s}-{r}.json")) for r in range(1, repeats + 1)]
med = lambda runs, key="tokens_per_s": statistics.median(x[key] for x in runs)
print()
head = "| model | params | loco tok/s | torch tok/s | loco / torch | CPU-time ratio |"
rule = "|---|---:|---:|---:|---:|---:|"
if variants:
    head += " best torch tok/s | loco / best torch |"
    rule += "---:|---:|"
print(head)
print(rule)
summary = {}
for s in ("tiny", "d256"):
    lo, to = load("loco", s), load("torch", s)
    l, t = med(lo), med(to)
    # CPU seconds per step (all threads): less sensitive to other jobs than wall time
    lc, tc = med(lo, "cpu_seconds_per_step"), med(to, "cpu_seconds_per_step")
    summary[s] = {"loco_tokens_per_s": l, "torch_tokens_per_s": t, "ratio": l / t,
                  "loco_cpu_s_per_step": lc, "torch_cpu_s_per_step": tc,
                  "loco_runs": [x["tokens_per_s"] for x in lo],
                  "torch_runs": [x["tokens_per_s"] for x in to]}
    row = (f"| {names[s]} | {lo[0]['parameters']:,} | {l:,.0f} | {t:,.0f} | {l / t:.2f}x "
           f"| {tc / lc:.2f}x |")
    if variants:
        options = {f"{threads} threads": t, "1 thread": med(load("torch1t", s)),
                   f"{threads} threads, OPENBLAS_NUM_THREADS=1": med(load("torchob1", s))}
        best = max(options, key=options.get)
        summary[s]["torch_variants"] = options
        summary[s]["torch_best"] = best
        row += f" {options[best]:,.0f} ({best}) | {l / options[best]:.2f}x |"
    print(row)
json.dump(summary, open(f"{out}/summary.json", "w"), indent=2)
print(f"\n(median of {repeats} repeats; CPU-time ratio = torch CPU s/step over loco's, all "
      f"threads; runs in {out})")
EOF
echo "== load after: $(cut -d' ' -f1-3 /proc/loadavg)"
