#!/usr/bin/env bash
# scripts/time_to_loss.py (the table of scripts/time-to-loss.sh) on hand-made run directories
# whose figures are worked out below, and the bad input of both scripts.
#  - time to target: the elapsed_s of the first validation at or below the target; a run that
#    never gets there is "not reached";
#  - DiLoCo methods: predicted = the "sim" run of the same method and rate;
#  - DDP: predicted = the unlimited-link run + per step max(0, ring time at the rate - the
#    all-reduce time per step measured there);
#  - blocked = comm.comm_seconds + comm.control.seconds; ratio = measured / predicted.
#  - Bad input: no runs.tsv, a broken metrics line -> exit 2 naming the file; the shell
#    script's bad options, an existing OUTDIR, not root -> exit 2, nothing created.
# Usage: time_to_loss_report.sh <path to loco> <source dir>
set -euo pipefail
SRC=$(realpath "$2")
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
chmod 755 "$T"
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }

# A run directory: run DIR "STEP_SECONDS..." "VAL_STEP:LOSS..." COMM_SECONDS CONTROL_SECONDS
# (elapsed_s accumulates the step times; summary.json has 4 workers, 125000 parameters).
run() {
  local dir=$1 seconds=$2 vals=$3 comm=$4 control=$5
  mkdir -p "$dir"
  python3 - "$dir" "$seconds" "$vals" "$comm" "$control" <<'PY'
import json, sys
d, seconds, vals, comm, control = sys.argv[1:]
seconds = [float(s) for s in seconds.split()]
vals = dict((int(a), float(b)) for a, b in (v.split(":") for v in vals.split()))
elapsed = 0.0
with open(f"{d}/metrics.jsonl", "w") as f:
    for step, s in enumerate(seconds, 1):
        elapsed += s
        if step in vals:
            f.write(json.dumps({"step": step, "val_loss": vals[step]}) + "\n")
        f.write(json.dumps({"step": step, "loss": 3.0, "step_seconds": s,
                            "elapsed_s": round(elapsed, 6)}) + "\n")
json.dump({"workers": 4, "parameters": 125000, "steps": len(seconds), "stopped_early": False,
           "comm": {"comm_seconds": float(comm), "sent_bytes": 1000,
                    "control": {"calls": 4, "bytes": 64, "seconds": float(control)}}},
          open(f"{d}/summary.json", "w"))
PY
}
O=$T/out
mkdir -p "$O/rep1"
printf 'rep\tmethod\trate\tkind\talgorithm\tdir\trc\tseconds\tload_before\tload_after\n' >"$O/runs.tsv"
row() { printf '1\t%s\t%s\t%s\tring\trep1/%s\t0\t1\t1\t1\n' "$@" >>"$O/runs.tsv"; }

# DDP. Ring all-reduce of 4 x 125000 bytes over 4 workers at 10 Mbit/s:
# 2*3/4 * 500000 * 8 / 1e7 = 0.6 s a step; measured unlimited 0.4 s / 4 steps = 0.1 s a step,
# so 0.5 s a step more. Unlimited: target 2.2 crossed at step 4, elapsed 0.95 s ->
# predicted 0.95 + 4 * 0.5 = 2.95 s; median step (0.2 0.2 0.25 0.3) 0.225 + 0.5 = 0.725 s;
# blocked 0.4 + 0.1 + 4 * 0.5 = 2.5 s. Real: elapsed 5.9 s (ratio 2), median 1.5 s
# (ratio 1.5 / 0.725), blocked 4 + 1 = 5 s (ratio 2).
run "$O/rep1/ddp-unlimited-sim" "0.2 0.3 0.2 0.25" "2:2.5 4:2.0" 0.4 0.1
row ddp unlimited sim ddp-unlimited-sim
run "$O/rep1/ddp-10mbit-real" "1.0 1.5 1.5 1.9" "2:2.5 4:2.0" 4.0 1.0
row ddp 10mbit real ddp-10mbit-real
# DiLoCo at 10 Mbit/s: crossed at step 2 in both; real 1.0 + 2.0 = 3.0 s, sim 0.5 + 1.0 =
# 1.5 s (ratio 2); blocked 2.5 + 0.5 = 3 s vs 1 + 0.5 = 1.5 s (ratio 2).
run "$O/rep1/diloco-10mbit-real" "1.0 2.0 1.0 1.0" "2:2.1 4:2.0" 2.5 0.5
row diloco 10mbit real diloco-10mbit-real
run "$O/rep1/diloco-10mbit-sim" "0.5 1.0 0.5 0.5" "2:2.1 4:2.0" 1.0 0.5
row diloco 10mbit sim diloco-10mbit-sim
# DiLoCo at 100 Mbit/s: never reaches 2.2 over the real link; the prediction run does, at
# step 4 (a warning: the losses should be the same).
run "$O/rep1/diloco-100mbit-real" "0.5 0.5 0.5 0.5" "2:2.5 4:2.3" 0.1 0.1
row diloco 100mbit real diloco-100mbit-real
run "$O/rep1/diloco-100mbit-sim" "0.5 0.5 0.5 0.5" "2:2.5 4:2.1" 0.1 0.1
row diloco 100mbit sim diloco-100mbit-sim

python3 "$SRC/scripts/time_to_loss.py" "$O" --target 2.2 --json "$T/r.json" --markdown "$T/r.md" ||
  fail "time_to_loss.py exited $?"
python3 - "$T/r.json" <<'PY' || fail "figures differ from the hand-computed ones"
import json, math, sys
r = json.load(open(sys.argv[1]))["runs"]
by = {(e["method"], e["rate"]): e for e in r}
bad = []
def eq(what, got, want):
    if got is None or want is None:
        if got is not want: bad.append(f"{what}: got {got}, want {want}")
    elif not math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-12):
        bad.append(f"{what}: got {got}, want {want}")
d = by[("ddp", "10mbit")]
eq("ddp step", d["measured"]["step_to_target"], 4)
eq("ddp time", d["measured"]["time_to_target"], 5.9)
eq("ddp pred time", d["predicted"]["time_to_target"], 2.95)
eq("ddp ring", d["predicted"]["ring_seconds_per_step"], 0.6)
eq("ddp pred median", d["predicted"]["median_step"], 0.725)
eq("ddp pred blocked", d["predicted"]["blocked"], 2.5)
eq("ddp ratio time", d["ratio"]["time_to_target"], 2.0)
eq("ddp ratio median", d["ratio"]["median_step"], 1.5 / 0.725)
eq("ddp ratio blocked", d["ratio"]["blocked"], 2.0)
g = by[("diloco", "10mbit")]
eq("diloco time", g["measured"]["time_to_target"], 3.0)
eq("diloco pred", g["predicted"]["time_to_target"], 1.5)
eq("diloco ratio", g["ratio"]["time_to_target"], 2.0)
eq("diloco ratio blocked", g["ratio"]["blocked"], 2.0)
h = by[("diloco", "100mbit")]
eq("not reached", h["measured"]["time_to_target"], None)
eq("not reached ratio", h["ratio"]["time_to_target"], None)
if "warning" not in h: bad.append("no warning for a prediction crossing at another step")
if "warning" in g or "warning" in d: bad.append("a warning where the steps agree")
print("\n".join(bad))
sys.exit(1 if bad else 0)
PY
grep -q "| ring | 10mbit | ddp | 1 | 4 | 5.9 s | 3.0 s | 2.00 |" "$T/r.md" ||
  { fail "the markdown row of DDP at 10mbit"; cat "$T/r.md"; }
grep -q "| ring | 100mbit | diloco | 1 | not reached |" "$T/r.md" ||
  fail "the markdown row of a run that never reached the target"

# ---------------------------------------------------------------- bad input: the analysis
rc=0
python3 "$SRC/scripts/time_to_loss.py" "$T/nothing" --target 2 >"$T/e1" 2>&1 || rc=$?
[[ $rc -eq 2 ]] && grep -q "no runs.tsv" "$T/e1" || { fail "no runs.tsv: exit $rc"; cat "$T/e1"; }
echo "{broken" >>"$O/rep1/diloco-10mbit-sim/metrics.jsonl"
rc=0
python3 "$SRC/scripts/time_to_loss.py" "$O" --target 2 --markdown "$T/r.md" >"$T/e2" 2>&1 || rc=$?
[[ $rc -eq 2 ]] && grep -q "diloco-10mbit-sim/metrics.jsonl:7: not JSON" "$T/e2" ||
  { fail "broken metrics line: exit $rc"; cat "$T/e2"; }
grep -q "5.9 s" "$T/r.md" || fail "a failed analysis replaced the earlier report"

# ---------------------------------------------------------------- bad input: the runner
TTL=$SRC/scripts/time-to-loss.sh
expect_usage_error() { # expect_usage_error WHAT PATTERN ARGS...
  local what=$1 pattern=$2 rc=0
  shift 2
  "$@" >"$T/u.out" 2>&1 || rc=$?
  [[ $rc -eq 2 ]] && grep -q -- "$pattern" "$T/u.out" ||
    { fail "$what: exit $rc (want 2 and '$pattern')"; cat "$T/u.out"; }
}
expect_usage_error "unknown method" "unknown method 'muloco'" bash "$TTL" --methods "ddp muloco" "$T/new1"
expect_usage_error "bad rate" "want a number and kbit" bash "$TTL" --rates "10mb" "$T/new2"
expect_usage_error "one node" "at least 2" bash "$TTL" -n 1 "$T/new3"
expect_usage_error "bad target" "want a loss" bash "$TTL" --target low "$T/new4"
expect_usage_error "no OUTDIR" "no OUTDIR" bash "$TTL"
for d in new1 new2 new3 new4; do [[ ! -e $T/$d ]] || fail "$d was created by a refused run"; done
if [[ $(id -u) -eq 0 ]]; then
  expect_usage_error "OUTDIR exists" "already exists" bash "$TTL" --loco "$(realpath "$1")" "$O"
  mkdir -p "$T/copy/scripts"
  cp "$TTL" "$T/copy/scripts/"
  chmod -R a+rX "$T/copy"
  expect_usage_error "not root" "must run as root" \
    setpriv --reuid=65534 --regid=65534 --clear-groups bash "$T/copy/scripts/time-to-loss.sh" "$T/new5"
  [[ ! -e $T/new5 ]] || fail "not root: OUTDIR was created"
fi

if ((fails > 0)); then
  echo "$fails check(s) failed"
  exit 1
fi
echo "time_to_loss report: all checks passed"
