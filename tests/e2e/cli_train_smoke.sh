#!/usr/bin/env bash
# The `loco` command line end to end, single process:
#  - `loco --help` and `loco train --help` exit 0 and show the subcommands / options;
#  - a short `loco train` writes config.json (resolved, overrides applied), metrics.jsonl (one
#    valid JSON record per step plus validation records) and summary.json with "comm";
#  - SIGINT during a run stops it after the current step, with summary.json, exit 130.
# Usage: cli_train_smoke.sh <path to loco> <source dir>
set -euo pipefail
LOCO=$(realpath "$1")
SRC=$2
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1

T=$(mktemp -d)
RUNNING=""
cleanup() {
  [[ -n $RUNNING ]] && kill -KILL "$RUNNING" 2>/dev/null || true
  rm -rf "$T"
}
trap cleanup EXIT
cd "$T"
CONFIG=$SRC/configs/tiny-ddp.json
TINY=(--set model.d_model=32 --set model.n_layers=2 --set model.n_heads=2
      --set model.n_kv_heads=1 --set model.d_ff=64 --set model.max_seq_len=32
      --set training.seq_len=32 --set training.micro_batch=2 --set schedule.warmup_steps=1
      --set training.eval_batches=2)
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }

# ---------------------------------------------------------------- help
rc=0
timeout 20 "$LOCO" --help >"$T/help.txt" 2>&1 || rc=$?
[[ $rc -eq 0 ]] || fail "loco --help exited $rc"
for w in train tokenize Usage; do
  grep -q "$w" "$T/help.txt" || fail "loco --help does not mention $w"
done
rc=0
timeout 20 "$LOCO" train --help >"$T/train-help.txt" 2>&1 || rc=$?
[[ $rc -eq 0 ]] || fail "loco train --help exited $rc"
for w in --set --out config KEY=VALUE; do
  grep -qF -- "$w" "$T/train-help.txt" || fail "loco train --help does not mention $w"
done
rc=0
timeout 20 "$LOCO" >/dev/null 2>&1 || rc=$?
[[ $rc -ne 0 ]] || fail "loco without a subcommand exited 0"
rc=0
timeout 20 "$LOCO" frobnicate >/dev/null 2>&1 || rc=$?
[[ $rc -ne 0 ]] || fail "loco with an unknown subcommand exited 0"

# ---------------------------------------------------------------- a short run
OUT=$T/run
rc=0
timeout 60 "$LOCO" train "$CONFIG" "${TINY[@]}" --set training.steps=6 \
  --set training.eval_interval=3 --out "$OUT" >"$T/run.out" 2>&1 || rc=$?
[[ $rc -eq 0 ]] || { fail "loco train exited $rc"; cat "$T/run.out"; }
for f in config.json metrics.jsonl summary.json; do
  [[ -s $OUT/$f ]] || fail "$f missing or empty"
done
grep -q 'step 6/6' "$T/run.out" || fail "no progress line for step 6/6"

python3 - "$OUT" <<'EOF' || fails=$((fails + 1))
import json, sys
out = sys.argv[1]
errors = []
cfg = json.load(open(out + "/config.json"))
if cfg["model"]["d_model"] != 32 or cfg["training"]["steps"] != 6:
    errors.append("config.json does not hold the overrides: %r" % cfg["model"])
if not cfg["data"]["train"].startswith("/"):
    errors.append("config.json data.train is not resolved: %r" % cfg["data"]["train"])
if cfg["output"]["dir"] != out:
    errors.append("config.json output.dir %r is not --out" % cfg["output"]["dir"])
lines = open(out + "/metrics.jsonl").read().splitlines()
records = []
for i, line in enumerate(lines, 1):
    try:
        records.append(json.loads(line))
    except ValueError as e:
        errors.append("metrics.jsonl line %d is not JSON (%s): %r" % (i, e, line))
steps = [r for r in records if "loss" in r]
vals = [r for r in records if "val_loss" in r]
if [r["step"] for r in steps] != [1, 2, 3, 4, 5, 6]:
    errors.append("step records: %r" % [r.get("step") for r in steps])
if [r["step"] for r in vals] != [3, 6]:
    errors.append("validation records: %r" % [r.get("step") for r in vals])
for r in steps:
    for k in ("loss", "lr", "grad_norm", "tokens", "step_seconds", "tok_per_s"):
        if k not in r:
            errors.append("step %s lacks %s" % (r.get("step"), k))
if steps and steps[-1]["tokens"] != 6 * 2 * 32:
    errors.append("tokens after 6 steps: %r" % steps[-1]["tokens"])
s = json.load(open(out + "/summary.json"))
for k in ("steps", "tokens", "final_train_loss", "final_val_loss", "comm", "stopped_early"):
    if k not in s:
        errors.append("summary.json lacks %s" % k)
if s.get("steps") != 6 or s.get("stopped_early") is not False:
    errors.append("summary steps/stopped_early: %r %r" % (s.get("steps"), s.get("stopped_early")))
c = s.get("comm", {})
for k in ("sent_bytes", "recv_bytes", "ddp_fp32_bytes", "by_kind", "workers"):
    if k not in c:
        errors.append("summary.comm lacks %s" % k)
if c.get("workers") != 1 or c.get("sent_bytes") != 0:
    errors.append("one process sends nothing: %r" % {k: c.get(k) for k in ("workers", "sent_bytes")})
if steps and abs(s["final_train_loss"] - steps[-1]["loss"]) > 1e-12:
    errors.append("final_train_loss differs from the last step's loss")
if vals and abs(s["final_val_loss"] - vals[-1]["val_loss"]) > 1e-12:
    errors.append("final_val_loss differs from the last validation record")
for e in errors:
    print("FAIL:", e)
sys.exit(1 if errors else 0)
EOF

# ---------------------------------------------------------------- bench with the extras
# `loco bench --muon --compression` (no data files): the step, then one Muon step and the
# compression of the parameter buffer, as JSON with the shares of the step.
rc=0
timeout 120 "$LOCO" bench "$CONFIG" "${TINY[@]}" --steps 2 --warmup 1 --muon --compression \
  --json "$T/bench.json" >"$T/bench.out" 2>&1 || rc=$?
[[ $rc -eq 0 ]] || { fail "loco bench --muon --compression exited $rc"; tail -5 "$T/bench.out"; }
grep -q "muon step" "$T/bench.out" || fail "loco bench --muon printed no Muon line"
grep -q "compression" "$T/bench.out" || fail "loco bench --compression printed no line"
python3 - "$T/bench.json" <<'EOF' || fail "bench JSON lacks the extras"
import json, sys
r = json.load(open(sys.argv[1]))
m, c = r["muon"], r["compression"]
assert m["ms"] > 0 and m["matrices"] == 2 * 7, m  # q k v o gate up down per layer
assert c["kept"] > 0 and c["payload_bytes"] > 48 and c["ratio_to_copy"] > 0, c
assert c["selector"] == "chunked_topk" and c["quantizer"] == "2bit", c
EOF

# ---------------------------------------------------------------- SIGINT stops after a step
OUT=$T/interrupted
# Started directly (not under `timeout`) so that the signal goes to loco itself; the loop
# below is the watchdog.
"$LOCO" train "$CONFIG" "${TINY[@]}" --set training.steps=100000 \
  --set training.eval_interval=0 --set training.log_interval=100000 --out "$OUT" \
  >"$T/int.out" 2>&1 &
RUNNING=$!
for _ in $(seq 300); do
  if [[ -f $OUT/metrics.jsonl ]] && [[ $(grep -c '"loss"' "$OUT/metrics.jsonl" || true) -ge 3 ]]; then
    break
  fi
  sleep 0.1
done
rc=0
t0=$(date +%s.%N)
kill -INT "$RUNNING" || fail "the run had already ended before SIGINT"
for _ in $(seq 300); do
  kill -0 "$RUNNING" 2>/dev/null || break
  sleep 0.1
done
if kill -0 "$RUNNING" 2>/dev/null; then
  fail "SIGINT did not stop the run within 30 s"
  kill -KILL "$RUNNING"
fi
wait "$RUNNING" || rc=$?
RUNNING=""
t1=$(date +%s.%N)
echo "SIGINT: exit $rc after $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }') s"
[[ $rc -eq 130 ]] || { fail "SIGINT run exited $rc (want 130)"; tail -5 "$T/int.out"; }
grep -q 'stop requested' "$T/int.out" || fail "no 'stop requested' message"
python3 - "$OUT" <<'EOF' || fails=$((fails + 1))
import json, sys
out = sys.argv[1]
errors = []
records = [json.loads(l) for l in open(out + "/metrics.jsonl").read().splitlines()]
steps = [r["step"] for r in records if "loss" in r]
s = json.load(open(out + "/summary.json"))
if steps != list(range(1, len(steps) + 1)):
    errors.append("step records are not 1..n")
if s["stopped_early"] is not True:
    errors.append("stopped_early is %r" % s["stopped_early"])
if s["steps"] != len(steps) or not (3 <= s["steps"] < 100000):
    errors.append("summary steps %r vs %d step records" % (s["steps"], len(steps)))
if s["steps_planned"] != 100000:
    errors.append("steps_planned %r" % s["steps_planned"])
if "comm" not in s:
    errors.append("summary lacks comm")
# The stop step is validated (the final model is evaluated).
if not any("val_loss" in r and r["step"] == s["steps"] for r in records):
    errors.append("no validation record at the stop step")
print("interrupted after step", s["steps"])
for e in errors:
    print("FAIL:", e)
sys.exit(1 if errors else 0)
EOF

if [[ $fails -ne 0 ]]; then
  echo "$fails failure(s)"
  exit 1
fi
echo "cli smoke ok"
