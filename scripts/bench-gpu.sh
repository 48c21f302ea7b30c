#!/usr/bin/env bash
# Side-by-side GPU benchmark: loco (CUDA backend) against PyTorch (HF LlamaForCausalLM, sdpa,
# bf16 autocast, fused AdamW; eager and torch.compile) on the same shapes, in one run.
# Prints one table last. Used by scripts/gpu-check.sh; needs a built loco (BUILD_DIR).
# Env: BUILD_DIR (default build-gpu), OUT (all figures go to $OUT/bench-results.jsonl),
#      MODELS (default 134m),
#      TORCH_MODES (default eager,compile), STEPS (default 20), VECTOR_AB / ATTENTION_AB
#      (default 1: also bench the first model with LOCO_VECTOR_KERNELS=1 / LOCO_ATTENTION=simt),
#      STEP_AB (default 1: also bench the first model with LOCO_STEP=host and =graph, and
#      every model with the vector kernels and the graph together: the "all on" rows).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
BUILD=${BUILD_DIR:-build-gpu}
MODELS=${MODELS:-134m}
STEPS=${STEPS:-20}
RESULTS=$(mktemp -d)
first_model=1
for model in ${MODELS//,/ }; do
  config=configs/${model}-ddp.json
  # The first model also times one Muon step and the outer-sync compression of its whole
  # parameter buffer (chunked top-k + 2-bit + EF) against a device copy of the same bytes.
  extras=()
  [[ $first_model == 1 ]] && extras=(--muon --compression)
  first_model=0
  echo "==> loco bench $config ${extras[*]}"
  timeout 180 "$BUILD/loco" bench "$config" --set backend=cuda --steps "$STEPS" --warmup 3 \
    "${extras[@]}" --json "$RESULTS/loco-$model.json" || echo "loco bench $model failed (rc $?)"
done
if [[ "${VECTOR_AB:-1}" == 1 ]]; then
  # The opt-in 16-byte vector kernels (kernels/loco_device.cuh) against the scalar default.
  first=${MODELS%%,*}
  echo "==> loco bench $first with LOCO_VECTOR_KERNELS=1"
  LOCO_VECTOR_KERNELS=1 timeout 120 "$BUILD/loco" bench "configs/${first}-ddp.json" \
    --set backend=cuda --steps "$STEPS" --warmup 3 --json "$RESULTS/loco-vec-$first.json" ||
    echo "vector-kernel bench failed"
fi
if [[ "${STEP_AB:-1}" == 1 ]]; then
  # The training step's three modes (loco/train/train_step.hpp): host-synchronised, the
  # default device-resident eager step (the rows above), and its CUDA-graph replay.
  first=${MODELS%%,*}
  for mode in host graph; do
    echo "==> loco bench $first with LOCO_STEP=$mode"
    LOCO_STEP=$mode timeout 120 "$BUILD/loco" bench "configs/${first}-ddp.json" --set backend=cuda \
      --steps "$STEPS" --warmup 3 --json "$RESULTS/loco-$mode-$first.json" || echo "$mode bench failed"
  done
  for model in ${MODELS//,/ }; do
    echo "==> loco bench $model with LOCO_VECTOR_KERNELS=1 LOCO_STEP=graph"
    LOCO_VECTOR_KERNELS=1 LOCO_STEP=graph timeout 120 "$BUILD/loco" bench \
      "configs/${model}-ddp.json" --set backend=cuda --steps "$STEPS" --warmup 3 \
      --json "$RESULTS/loco-vecgraph-$model.json" || echo "vector+graph bench $model failed"
  done
fi
if [[ "${ATTENTION_AB:-1}" == 1 ]]; then
  # The same step with the fallback SIMT attention kernels, and a per-op profile, so a change
  # to attention is measured against its predecessor on the same machine.
  first=${MODELS%%,*}
  echo "==> loco bench $first with LOCO_ATTENTION=simt"
  LOCO_ATTENTION=simt timeout 120 "$BUILD/loco" bench "configs/${first}-ddp.json" --set backend=cuda \
    --steps 10 --warmup 2 --json "$RESULTS/loco-simt-$first.json" || echo "simt bench failed"
  echo "==> loco bench $first --profile"
  timeout 120 "$BUILD/loco" bench "configs/${first}-ddp.json" --set backend=cuda --steps 5 \
    --warmup 2 --profile | sed -n '/per step/,$p' | head -40
fi
if python3 -c "import torch, transformers" 2>/dev/null; then
  echo "==> PyTorch reference"
  timeout 300 python3 scripts/torch_gpu_bench.py --model "${TORCH_MODELS:-$MODELS}" \
    --modes "${TORCH_MODES:-eager,compile}" --steps "$STEPS" | tee "$RESULTS/torch.jsonl"
else
  echo "PyTorch/transformers not importable: no reference figures"
fi
# Every result in one file (the device tool returns at most 8 files from $OUT): a line per
# result file, {"file": name, "result": its JSON}.
if [[ -n "${OUT:-}" ]]; then
  python3 - "$RESULTS" >"$OUT/bench-results.jsonl" <<'PY'
import glob, json, os, sys
for f in sorted(glob.glob(os.path.join(sys.argv[1], "*.json*"))):
    for line in open(f) if f.endswith(".jsonl") else [open(f).read()]:
        if line.strip():
            print(json.dumps({"file": os.path.basename(f), "result": json.loads(line)}))
PY
fi
python3 - "$RESULTS" <<'PY'
import glob, json, os, sys
d = sys.argv[1]
rows = []
for f in sorted(glob.glob(os.path.join(d, "loco-*.json"))):
    r = json.load(open(f))
    # loco bench's keys -> the torch script's
    r["step_ms"] = 1e3 * r["step_median_s"]
    r["tok_per_s"] = r["tokens_per_s"]
    r["tflops"] = r["model_flops_per_s"] / 1e12
    r["mfu"] = r["tflops"] / 989.0
    r["peak_mem_gib"] = r.get("peak_device_mem_gib", float("nan"))
    rows.append(("loco", os.path.basename(f)[5:-5], r))
if os.path.exists(os.path.join(d, "torch.jsonl")):
    for line in open(os.path.join(d, "torch.jsonl")):
        r = json.loads(line)
        rows.append((r["impl"], r["model"], r))
def get(r, *keys):
    for k in keys:
        if k in r and r[k] is not None:
            return r[k]
    return float("nan")
print()
print(f"{'impl':<15} {'model':<9} {'step ms':>9} {'tok/s':>10} {'TFLOP/s':>8} {'MFU':>6} {'mem GiB':>8}")
by = {}
for impl, model, r in rows:
    if "error" in r:
        print(f"{impl:<15} {model:<9} error: {r['error'][:60]}")
        continue
    tok = get(r, "tok_per_s", "tokens_per_s")
    by[(impl, model)] = tok
    print(f"{impl:<15} {model:<9} {get(r, 'step_ms', 'step_ms_median'):>9.1f} {tok:>10.0f} "
          f"{get(r, 'tflops', 'tflop_per_s'):>8.1f} {100 * get(r, 'mfu'):>5.1f}% "
          f"{get(r, 'peak_mem_gib', 'peak_device_mem_gib'):>8.2f}")
for impl, model, r in rows:
    if impl == "loco" and "muon" in r:
        m = r["muon"]
        print(f"loco {model} Muon step: {m['ms']:.2f} ms = {100 * m['share_of_step']:.1f}% of a "
              f"step ({m['matrices']} matrices, NS in {m['newton_schulz_dtype']}; target <= 10%)")
    if impl == "loco" and "compression" in r:
        c = r["compression"]
        print(f"loco {model} compression: {c['ms']:.2f} ms = {c['ratio_to_copy']:.1f}x a D2D copy "
              f"({c['copy_ms']:.3f} ms) of {c['elements']:,} f32 (target <= 3x)")
        p = c.get("phases_ms", {})
        if p:
            print("  phases (synchronised): " +
                  " | ".join(f"{k} {v:.3f}" for k, v in p.items()) + " ms")
for impl, model, r in rows:
    if impl == "loco" and "step_mode" in r:
        print(f"loco {model}: step mode {r['step_mode']}"
              f"{' (graph replayed)' if r.get('step_graph') else ''}")
for (impl, model), tok in by.items():
    if impl == "loco":
        base = model.split("-")[-1]  # "vec-134m" / "graph-134m": variants of the 134m row
        for ref in ("torch-eager", "torch-compile"):
            if (ref, base) in by:
                print(f"ratio loco / {ref} ({model}): {tok / by[(ref, base)]:.2f}x")
PY
