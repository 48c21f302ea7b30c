#!/usr/bin/env bash
# The run directory is never clobbered:
#  - a fresh run into a directory holding a run is refused (exit 2) and changes nothing;
#    --overwrite replaces it;
#  - a second run into a directory in use is refused at once (lock);
#  - a refused --resume (other model shape, other data) writes nothing (config.json stays);
#  - resuming a finished run says there is nothing to do and leaves every file alone; a
#    larger training.steps extends it;
#  - after a resume metrics.jsonl holds every step once (records past the checkpoint are
#    dropped, a torn line too) and a "resume" record;
#  - other training data on resume is refused, naming data.train, unless
#    data.on_resume_change = "restart" (then the log and the resume record say so);
#  - ranks with different --out are refused, naming the ranks and directories.
# Usage: run_dir_safety.sh <path to loco> <source dir>
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
CONFIG=$SRC/configs/tiny.json
TINY=(--set model.d_model=32 --set model.n_layers=2 --set model.n_heads=2
      --set model.n_kv_heads=1 --set model.d_ff=64 --set model.max_seq_len=32
      --set training.seq_len=32 --set training.micro_batch=2 --set schedule.warmup_steps=1
      --set training.eval_batches=2 --set training.eval_interval=0 --set checkpoint.interval=2)
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
fingerprint() { (cd "$1" && find . -type f ! -name .loco.lock -print0 | sort -z | xargs -0 sha256sum); }
run() {  # run NAME ARGS... : loco train, output to $T/NAME.out, sets $rc
  local name=$1
  shift
  rc=0
  timeout 120 "$LOCO" train "$CONFIG" "${TINY[@]}" "$@" >"$T/$name.out" 2>&1 || rc=$?
}
step_records() {  # the "step" of every loss record of a metrics.jsonl, space-separated
  python3 -c 'import json,sys; print(" ".join(str(json.loads(l)["step"]) for l in open(sys.argv[1]) if "\"loss\"" in l))' "$1"
}

# ---------------------------------------------------------------- a finished run A
A=$T/a
run a --set training.steps=4 --out "$A"
[[ $rc -eq 0 ]] || { fail "run A exited $rc"; cat "$T/a.out"; }
BEFORE=$(fingerprint "$A")

# A fresh run into it is refused, and nothing changes.
run a2 --set training.steps=6 --out "$A"
[[ $rc -eq 2 ]] || fail "fresh run into a run directory exited $rc (want 2)"
grep -q "already holds a run" "$T/a2.out" || { fail "no 'already holds a run' message"; cat "$T/a2.out"; }
grep -q -- "--overwrite" "$T/a2.out" || fail "the refusal does not mention --overwrite"
[[ $(fingerprint "$A") == "$BEFORE" ]] || fail "a refused fresh run changed the run directory"

# A refused --resume (other model shape) writes nothing: config.json stays A's.
run a3 --set training.steps=4 --set model.d_model=64 --out "$A" --resume latest
[[ $rc -ne 0 ]] || fail "resume with another d_model exited 0"
grep -q "does not match" "$T/a3.out" || { fail "no 'does not match'"; cat "$T/a3.out"; }
[[ $(fingerprint "$A") == "$BEFORE" ]] || fail "a refused --resume changed the run directory"

# Resuming the finished run: nothing to do, every file untouched.
run a4 --set training.steps=4 --out "$A" --resume latest
[[ $rc -eq 0 ]] || { fail "resume of a finished run exited $rc"; cat "$T/a4.out"; }
grep -q "nothing to do" "$T/a4.out" || { fail "no 'nothing to do' message"; cat "$T/a4.out"; }
[[ $(fingerprint "$A") == "$BEFORE" ]] || fail "resuming a finished run changed the run directory"

# Other training data on resume: refused, naming data.train, nothing written.
printf 'In the beginning was the word, and the word was with the shards.\n%.0s' $(seq 40) >"$T/other.txt"
"$LOCO" tokenize "$T/other.txt" --train "$T/other.bin" >/dev/null
run a5 --set training.steps=6 --set data.train="$T/other.bin" --out "$A" --resume latest
[[ $rc -eq 2 ]] || fail "resume with other data exited $rc (want 2)"
grep -q "the training data changed since the checkpoint (data.train: .* -> $T/other.bin" "$T/a5.out" ||
  { fail "the refusal does not name data.train"; cat "$T/a5.out"; }
grep -q 'data.on_resume_change = "restart"' "$T/a5.out" || fail "the refusal does not name the key"
run a5b --set training.steps=6 --set training.seq_len=16 --out "$A" --resume latest
[[ $rc -eq 2 ]] || fail "resume with another seq_len exited $rc (want 2)"
grep -q "training.seq_len: 32 -> 16" "$T/a5b.out" || { fail "the refusal does not name seq_len"; cat "$T/a5b.out"; }
[[ $(fingerprint "$A") == "$BEFORE" ]] || fail "a refused data change changed the run directory"

# Extending the finished run (training.steps 4 -> 6): steps 5 and 6 follow, once each.
run a6 --set training.steps=6 --out "$A" --resume latest
[[ $rc -eq 0 ]] || { fail "extending the run exited $rc"; cat "$T/a6.out"; }
[[ $(step_records "$A/metrics.jsonl") == "1 2 3 4 5 6" ]] ||
  fail "metrics after extending: steps $(step_records "$A/metrics.jsonl")"
python3 - "$A" <<'PY' || fail "summary/config after extending"
import json, sys
d = sys.argv[1]
s = json.load(open(d + "/summary.json"))
assert s["steps"] == 6 and s["final_train_loss"] > 0, s
assert json.load(open(d + "/config.json"))["training"]["steps"] == 6
PY

# Continued training on new data, asked for explicitly: the data restarts, the log says so.
run a7 --set training.steps=8 --set data.train="$T/other.bin" --set data.on_resume_change=restart \
  --out "$A" --resume latest
[[ $rc -eq 0 ]] || { fail "resume with data.on_resume_change=restart exited $rc"; cat "$T/a7.out"; }
grep -q "reading the new data from its beginning" "$T/a7.out" || fail "no 'new data' line in the log"
python3 - "$A/metrics.jsonl" <<'PY' || fail "resume record for the data restart"
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1])]
res = [r for r in recs if "resume" in r]
assert len(res) == 2, res
assert res[-1]["step"] == 6 and res[-1]["resume"]["data"] == "restarted", res[-1]
assert "data.train" in res[-1]["resume"]["data_change"], res[-1]
PY

# --overwrite replaces the run: only the new run's records and checkpoints remain.
run a8 --set training.steps=2 --out "$A" --overwrite
[[ $rc -eq 0 ]] || { fail "--overwrite exited $rc"; cat "$T/a8.out"; }
[[ $(step_records "$A/metrics.jsonl") == "1 2" ]] || fail "metrics after --overwrite: $(step_records "$A/metrics.jsonl")"
[[ $(ls "$A/checkpoints") == $'latest\nstep-000002' ]] || fail "checkpoints after --overwrite: $(ls "$A/checkpoints" | tr '\n' ' ')"
run a9 --out "$A" --overwrite --resume latest
[[ $rc -eq 2 ]] || fail "--overwrite with --resume exited $rc (want 2)"

# ---------------------------------------------------------------- metrics after a resume
# Recreate what a kill right after the step-2 checkpoint of a 6-step run leaves, plus a torn
# line, then resume: each step once, and a resume record that counts the dropped records.
C=$T/c
run c --set training.steps=6 --out "$C"
[[ $rc -eq 0 ]] || { fail "run C exited $rc"; cat "$T/c.out"; }
rm -rf "$C/checkpoints/step-000004" "$C/checkpoints/step-000006"
printf 'step-000002\n' >"$C/checkpoints/latest"
printf '{"step": 7, "loss": 1.2' >>"$C/metrics.jsonl"
run c2 --set training.steps=6 --out "$C" --resume latest
[[ $rc -eq 0 ]] || { fail "resume of C exited $rc"; cat "$T/c2.out"; }
[[ $(step_records "$C/metrics.jsonl") == "1 2 3 4 5 6" ]] ||
  fail "metrics after resume: steps $(step_records "$C/metrics.jsonl")"
python3 - "$C/metrics.jsonl" <<'PY' || fail "metrics.jsonl after resume"
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1])]  # every line is JSON (the torn one is gone)
res = [r for r in recs if "resume" in r]
assert len(res) == 1 and res[0]["step"] == 2, res
assert res[0]["resume"]["dropped_records"] == 6, res  # steps 3..6, the final validation, the torn line
assert res[0]["resume"]["data"] == "continued", res
PY

# ---------------------------------------------------------------- a second run at the same time
B=$T/b
"$LOCO" train "$CONFIG" "${TINY[@]}" --set training.steps=100000 --set checkpoint.interval=0 \
  --set training.log_interval=100000 --out "$B" >"$T/b.out" 2>&1 &
RUNNING=$!
for _ in $(seq 600); do
  [[ -s $B/metrics.jsonl ]] && break
  sleep 0.05
done
run b2 --set training.steps=4 --out "$B" --overwrite
[[ $rc -eq 2 ]] || fail "a second run into a directory in use exited $rc (want 2)"
grep -q "is in use by another loco run (pid $RUNNING" "$T/b2.out" ||
  { fail "the refusal does not name the running process"; cat "$T/b2.out"; }
kill -INT "$RUNNING"
wait "$RUNNING" || true
RUNNING=""
# The first run was not disturbed: its metrics hold consecutive steps.
python3 - "$B/metrics.jsonl" <<'PY' || fail "the first run's metrics were disturbed"
import json, sys
steps = [json.loads(l)["step"] for l in open(sys.argv[1]) if '"loss"' in l]
assert steps == list(range(1, len(steps) + 1)), steps[:10]
PY

# ---------------------------------------------------------------- ranks with different --out
cat >"$T/per-rank-out.sh" <<'SH'
#!/usr/bin/env bash
exec "$@" --out "$OUT_BASE/rank-$OMPI_COMM_WORLD_RANK"
SH
chmod +x "$T/per-rank-out.sh"
rc=0
OUT_BASE=$T/split timeout -k 5 120 mpirun --allow-run-as-root --oversubscribe --bind-to none -np 2 \
  -x OUT_BASE "$T/per-rank-out.sh" "$LOCO" train "$SRC/configs/tiny-ddp.json" "${TINY[@]}" \
  --set training.steps=2 >"$T/split.out" 2>&1 || rc=$?
[[ $rc -ne 0 ]] || fail "ranks with different --out: exit 0"
grep -q "ranks disagree on the run directory.*rank 0: run directory $T/split/rank-0.*rank 1: run directory $T/split/rank-1" "$T/split.out" ||
  { fail "the refusal does not name the ranks and directories"; cat "$T/split.out"; }
[[ ! -e $T/split ]] || fail "a refused start created $(find "$T/split" | tr '\n' ' ')"

if [[ $fails -ne 0 ]]; then
  echo "$fails failure(s)"
  exit 1
fi
echo "run_dir_safety: all checks passed"
