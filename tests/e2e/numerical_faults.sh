#!/usr/bin/env bash
# Numerical faults: a diverging run (lr 1e30, no clipping) stops with an error that names the
# tensor and the step; with training.nan_policy=skip it goes on, counts the skipped updates and
# exits 1 when it ends non-finite; no checkpoint is written from non-finite state; `loco eval`
# of NaN weights is an error naming the tensor.
set -euo pipefail
LOCO=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
common=(--set model.d_model=32 --set model.n_layers=2 --set model.n_heads=2 --set model.n_kv_heads=1
  --set model.d_ff=64 --set training.seq_len=32 --set training.micro_batch=2 --set training.steps=4
  --set schedule.warmup_steps=0 --set schedule.type=constant --set optimizer.lr=1e30
  --set optimizer.grad_clip=0 --set training.eval_interval=0 --set checkpoint.interval=1)
set +e
"$LOCO" train "$LOCO_SOURCE_DIR/configs/tiny.json" "${common[@]}" --out "$tmp/stop" 2>"$tmp/stop.err" >/dev/null
rc=$?
set -e
cat "$tmp/stop.err"
[[ $rc -ne 0 ]] || { echo "FAIL: diverging run exited 0"; exit 1; }
grep -Eq "non-finite gradient in model\.[a-z_.0-9]+ at step [0-9]+|loss is (nan|inf|-nan)" "$tmp/stop.err" ||
  { echo "FAIL: message does not name the tensor/step"; exit 1; }
# With nan_policy=skip the run goes on, counts the skipped updates in metrics.jsonl and
# summary.json, and, ending non-finite, exits 1 with a message (never 0).
rc=0
"$LOCO" train "$LOCO_SOURCE_DIR/configs/tiny.json" "${common[@]}" --set training.nan_policy=skip \
  --out "$tmp/skip" >"$tmp/skip.out" 2>&1 || rc=$?
[[ $rc -eq 1 ]] || { cat "$tmp/skip.out"; echo "FAIL: a run ending non-finite exited $rc (want 1)"; exit 1; }
grep -q "update skipped\|going on" "$tmp/skip.out" || { echo "FAIL: no skip warning"; exit 1; }
grep -q "error: the run ended with a non-finite loss" "$tmp/skip.out" ||
  { cat "$tmp/skip.out"; echo "FAIL: no non-finite end message"; exit 1; }
python3 - "$tmp/skip" <<'PY' || { echo "FAIL: skipped steps are not counted"; exit 1; }
import json, sys
d = sys.argv[1]
recs = [json.loads(l) for l in open(d + "/metrics.jsonl")]
steps = [r for r in recs if "loss" in r]
skipped = [r["step"] for r in steps if r.get("skipped")]
assert skipped, "no step record says skipped"
assert steps[-1]["skipped_steps"] == len(skipped), (steps[-1], skipped)
s = json.load(open(d + "/summary.json"))
assert s["skipped_steps"] == len(skipped) and s["finite"] is False, s
assert s["final_train_loss"] is None, s  # NaN is written as null
print("skipped steps:", skipped)
PY
# Checkpoints hold only finite state: the first step's update is finite (huge but < FLT_MAX)
# so step 1 may be saved; later steps are non-finite and must not be.
for f in $(find "$tmp/skip" -name 'rank-*.bin' 2>/dev/null); do
  case "$f" in */step-000001/*) ;; *) echo "FAIL: checkpoint from non-finite state: $f"; exit 1 ;; esac
done
# `loco eval` of weights holding a NaN is an error naming the tensor, not "loss": null.
src=$(find "$tmp/skip" -name 'rank-0.bin' | head -1)
"$LOCO" export-hf "$src" "$tmp/hf" >/dev/null
python3 - "$tmp/hf/model.safetensors" <<'PY'
import json, struct, sys
path = sys.argv[1]
b = bytearray(open(path, "rb").read())
n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n])
start = 8 + n + h["model.norm.weight"]["data_offsets"][0]
b[start:start + 4] = struct.pack("<f", float("nan"))
open(path, "wb").write(bytes(b))
PY
printf 'some text to evaluate the exported model on, long enough.\n' >"$tmp/text.txt"
rc=0
"$LOCO" eval "$tmp/hf" --text "$tmp/text.txt" >"$tmp/eval.out" 2>&1 || rc=$?
cat "$tmp/eval.out"
[[ $rc -eq 2 ]] || { echo "FAIL: eval of NaN weights exited $rc (want 2)"; exit 1; }
grep -q "tensor model.norm.weight holds nan" "$tmp/eval.out" || { echo "FAIL: eval does not name the tensor"; exit 1; }
echo "numerical faults: OK"
