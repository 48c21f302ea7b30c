#!/usr/bin/env bash
# model.init_from: a run starts from the weights of a loco checkpoint or a Hugging Face
# directory, with a fresh optimizer:
#  - the first step's loss equals `loco eval` of the source on the same batch (a shard of
#    exactly one window, micro_batch 1), for a run directory and for its HF export;
#  - the first checkpoint's optimizer has taken exactly one step;
#  - a source of another shape is refused, naming the tensor, both shapes and the keys;
#  - a missing source is refused before anything is written.
# Usage: init_from.sh <path to loco> <source dir>
set -euo pipefail
LOCO=$(realpath "$1")
SRC=$2
export OMP_NUM_THREADS=1
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
cd "$T"
CONFIG=$SRC/configs/tiny.json
TINY=(--set model.d_model=32 --set model.n_layers=2 --set model.n_heads=2
      --set model.n_kv_heads=1 --set model.d_ff=64 --set model.max_seq_len=32
      --set training.seq_len=32 --set training.micro_batch=2 --set schedule.warmup_steps=1
      --set training.eval_batches=2 --set training.eval_interval=0)
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }

# The source: a few steps of training, so that its weights are not the seed's.
rc=0
timeout 120 "$LOCO" train "$CONFIG" "${TINY[@]}" --set training.steps=5 --set checkpoint.interval=5 \
  --out "$T/source" >"$T/source.out" 2>&1 || rc=$?
[[ $rc -eq 0 ]] || { fail "source run exited $rc"; cat "$T/source.out"; }
"$LOCO" export-hf "$T/source" "$T/hf" >/dev/null

# One window of seq_len + 1 = 33 tokens: the first batch of micro_batch 1 is exactly it.
printf 'Blessed are the meek: for they sh' >"$T/one.txt"
"$LOCO" tokenize "$T/one.txt" --train "$T/one.bin" >/dev/null

first_loss() { python3 -c 'import json,sys; print([json.loads(l) for l in open(sys.argv[1]) if "\"loss\"" in l][0]["loss"])' "$1"; }
eval_loss() { "$LOCO" eval "$1" --data "$T/one.bin" --seq-len 32 | python3 -c 'import json,sys; print(json.load(sys.stdin)["loss"])'; }
same() { python3 -c 'import sys; a, b = map(float, sys.argv[1:]); sys.exit(0 if abs(a - b) <= 1e-6 * max(1, abs(b)) else 1)' "$1" "$2"; }

for kind in run hf; do
  from=$T/source
  [[ $kind == hf ]] && from=$T/hf
  out=$T/init-$kind
  rc=0
  timeout 120 "$LOCO" train "$CONFIG" "${TINY[@]}" --set training.steps=2 --set checkpoint.interval=1 \
    --set training.micro_batch=1 --set "data.train=$T/one.bin" --set data.val= \
    --set "model.init_from=$from" --out "$out" >"$T/init-$kind.out" 2>&1 || rc=$?
  [[ $rc -eq 0 ]] || { fail "$kind: init_from run exited $rc"; cat "$T/init-$kind.out"; continue; }
  grep -q "model.init_from: weights from" "$T/init-$kind.out" || fail "$kind: no init_from line in the log"
  trained=$(first_loss "$out/metrics.jsonl")
  evaluated=$(eval_loss "$from")
  echo "$kind: first step loss $trained, loco eval of the source $evaluated"
  same "$trained" "$evaluated" || fail "$kind: first step loss $trained != eval $evaluated"
  # Random weights would give about ln 256 = 5.55; the source has learned something.
  python3 -c 'import sys; sys.exit(0 if float(sys.argv[1]) < 5.4 else 1)' "$trained" ||
    fail "$kind: first loss $trained looks like random initialisation"
  # A fresh optimizer: the step-1 checkpoint's optimizer has taken one step.
  python3 - "$out/checkpoints/step-000001/rank-0.bin" <<'PY' || fail "$kind: optimizer state is not fresh"
import json, struct, sys
b = open(sys.argv[1], "rb").read()
h = struct.unpack("<Q", b[16:24])[0]
meta = json.loads(b[64:64 + h])["meta"]
assert meta["optimizer_steps_taken"] == 1, meta["optimizer_steps_taken"]
PY
  grep -q "\"init_from\": \"$from\"" "$out/config.json" || fail "$kind: config.json does not hold init_from"
done

# Another shape: refused, naming the tensor, the shapes and the keys; nothing written.
rc=0
timeout 60 "$LOCO" train "$CONFIG" "${TINY[@]}" --set model.d_model=64 --set training.steps=2 \
  --set "model.init_from=$T/hf" --out "$T/bad" >"$T/bad.out" 2>&1 || rc=$?
[[ $rc -eq 2 ]] || fail "shape mismatch exited $rc (want 2)"
grep -q "tensor model.embed_tokens.weight has shape \[256, 32\] in the source but \[256, 64\] in this model (model.d_model = 32 there, 64 here)" "$T/bad.out" ||
  { fail "the shape mismatch message"; cat "$T/bad.out"; }
rc=0
timeout 60 "$LOCO" train "$CONFIG" "${TINY[@]}" --set model.n_layers=3 --set training.steps=2 \
  --set "model.init_from=$T/source" --out "$T/bad2" >"$T/bad2.out" 2>&1 || rc=$?
[[ $rc -eq 2 ]] || fail "layer mismatch exited $rc (want 2)"
grep -q "the source has no tensor model.layers.2.input_layernorm.weight, which this model needs (model.n_layers = 2 there, 3 here)" "$T/bad2.out" ||
  { fail "the layer mismatch message"; cat "$T/bad2.out"; }
[[ ! -e $T/bad && ! -e $T/bad2 ]] || fail "a refused init_from left a run directory"

if [[ $fails -ne 0 ]]; then
  echo "$fails failure(s)"
  exit 1
fi
echo "init_from: all checks passed"
