#!/usr/bin/env bash
# scripts/sweep.py end to end:
#  - the report's arithmetic on hand-made summaries: mean ± sample std over seeds, the best
#    setting per method, the Pareto front, unfinished cells left out;
#  - a real sweep of a tiny model: 2 grid points × 2 seeds of single-process AdamW and a 2-rank
#    DiLoCo, a few steps each: every cell runs, the report has both methods and the plots;
#  - resumability: run again → nothing reruns; remove one cell's summary → only that cell reruns
#    and the others' files are untouched;
#  - a two-stage sweep (tune seed, then the final seeds at the best point only);
#  - bad definitions: a clear message and exit 2.
# Usage: sweep.sh <path to loco> <source dir>
set -euo pipefail
LOCO=$(realpath "$1")
SRC=$(realpath "$2")
SWEEP=$SRC/scripts/sweep.py
PY=python3
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
cd "$T"
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }

# ---------------------------------------------------------------- the table math
cat >"$T/fake.json" <<EOF
{"out": "$T/fake", "seeds": [1, 2, 3],
 "methods": [
   {"name": "a", "config": "unused.json", "grid": {"optimizer.lr": [0.001, 0.003]}},
   {"name": "b", "config": "unused.json"},
   {"name": "c", "config": "unused.json"}]}
EOF
fake_cell() {  # method point seed val train sent stopped_early
  local d=$T/fake/$1/$2/seed-$3
  mkdir -p "$d"
  cat >"$d/summary.json" <<EOF
{"steps": 10, "steps_planned": 10, "stopped_early": $7, "final_val_loss": $4,
 "final_train_loss": $5, "tokens": 100, "workers": 2, "wall_time_s": 1.5,
 "comm": {"sent_bytes": $6, "ratio_vs_ddp_fp32": 3.0}}
EOF
  printf '{"step": 10, "comm_sent_bytes": %s}\n{"step": 10, "val_loss": %s}\n' "$6" "$4" >"$d/metrics.jsonl"
}
fake_cell a optimizer.lr=0.001 1 2.0 1.9 1000 false
fake_cell a optimizer.lr=0.001 2 3.0 2.9 1000 false
fake_cell a optimizer.lr=0.001 3 4.0 3.9 1000 false
fake_cell a optimizer.lr=0.003 1 1.5 1.4 1000 false
fake_cell a optimizer.lr=0.003 2 2.5 2.4 1000 false
fake_cell a optimizer.lr=0.003 3 9.0 8.9 1000 true # stopped early: not counted
fake_cell b default 1 2.5 2.4 10 false
fake_cell b default 2 2.5 2.4 10 false
fake_cell c default 3 2.25 2.2 2000 false # one seed: no spread to report
$PY "$SWEEP" report "$T/fake.json" >"$T/fake.out" 2>&1 || fail "report on fake cells: $(cat "$T/fake.out")"
$PY - "$T/fake/results.json" <<'PY' || fail "fake report arithmetic"
import json, math, sys
r = json.load(open(sys.argv[1]))
g = {(x["method"], x["point_name"]): x for x in r["groups"]}
a1, a3, b = g[("a", "optimizer.lr=0.001")], g[("a", "optimizer.lr=0.003")], g[("b", "default")]
ok = True
def check(what, got, want):
    global ok
    if not math.isclose(got, want, rel_tol=1e-12, abs_tol=1e-12):
        print(f"{what}: got {got}, want {want}"); ok = False
check("a lr 1e-3 mean", a1["val_mean"], 3.0)             # (2 + 3 + 4) / 3
check("a lr 1e-3 std", a1["val_std"], 1.0)               # sample std of 2, 3, 4
check("a lr 3e-3 mean", a3["val_mean"], 2.0)             # seed 3 stopped early: left out
check("a lr 3e-3 std", a3["val_std"], math.sqrt(0.5))    # sample std of 1.5, 2.5
check("b std", b["val_std"], 0.0)
if g[("c", "default")]["val_std"] is not None: print("c: a std from one seed"); ok = False
if a3["seeds"] != [1, 2]: print("a lr 3e-3 seeds", a3["seeds"]); ok = False
if r["best"] != {"a": "optimizer.lr=0.003", "b": "default", "c": "default"}:
    print("best", r["best"]); ok = False
# Pareto front: b (10 B, 2.5) and a (1000 B, 2.0): neither beats the other on both axes;
# c (2000 B, 2.25) is beaten by a on both.
front = [(p["method"], p["sent_bytes"]) for p in r["pareto"]]
if front != [("b", 10), ("a", 1000)]: print("pareto", front); ok = False
sys.exit(0 if ok else 1)
PY
grep -q "| a | \`optimizer.lr=0.003\` | 2 | 2.0000 ± 0.7071 |" "$T/fake/results.md" ||
  fail "results.md lacks a's best row: $(grep '| a |' "$T/fake/results.md")"
grep -q "| c | \`default\` | 1 | 2.2500 (1 seed) |" "$T/fake/results.md" ||
  fail "results.md lacks c's one-seed row: $(grep '| c |' "$T/fake/results.md")"

# ---------------------------------------------------------------- a real sweep
TINY='"model.d_model": 32, "model.n_layers": 2, "model.n_heads": 2, "model.n_kv_heads": 1,
      "model.d_ff": 64, "model.max_seq_len": 32, "training.seq_len": 32,
      "training.micro_batch": 2, "schedule.warmup_steps": 1, "training.eval_batches": 2,
      "training.steps": 6, "training.eval_interval": 3, "training.log_interval": 3'
cat >"$T/real.json" <<EOF
{"out": "$T/real", "seeds": [1, 2], "workers": 1,
 "set": {$TINY},
 "methods": [
   {"name": "adamw", "config": "$SRC/configs/tiny.json",
    "grid": {"optimizer.lr": [0.001, 0.003]}},
   {"name": "diloco", "config": "$SRC/configs/tiny-diloco.json", "workers": 2,
    "set": {"distributed.outer.interval": 3}}]}
EOF
$PY "$SWEEP" run "$T/real.json" --loco "$LOCO" --jobs 2 >"$T/run1.out" 2>&1 ||
  fail "first sweep run failed: $(tail -20 "$T/run1.out")"
grep -q "\[6/6 cells" "$T/run1.out" || fail "progress never reached 6/6: $(grep cells "$T/run1.out")"
grep -q "ETA" "$T/run1.out" || fail "no ETA in the progress lines"
[[ $(grep -c "^  start " "$T/run1.out") -eq 6 ]] || fail "first run did not start 6 cells"
for d in adamw/optimizer.lr=0.001/seed-1 adamw/optimizer.lr=0.003/seed-2 diloco/default/seed-2; do
  [[ -f $T/real/$d/summary.json ]] || fail "no summary in $d"
done
[[ -f $T/real/loss-vs-bytes.png && -f $T/real/loss-vs-step.png ]] || fail "plots missing"
grep -q "| diloco | \`default\` | 2 |" "$T/real/results.md" || fail "diloco row missing"
# The table's mean is the mean of the cells' own summaries.
$PY - "$T/real" <<'PY' || fail "real report disagrees with the summaries"
import json, statistics, sys
out = sys.argv[1]
r = json.load(open(out + "/results.json"))
for g in r["groups"]:
    vals = [json.load(open(f"{out}/{g['method']}/{g['point_name']}/seed-{s}/summary.json"))
            ["final_val_loss"] for s in g["seeds"]]
    assert abs(statistics.mean(vals) - g["val_mean"]) < 1e-12, (g, vals)
    assert abs(statistics.stdev(vals) - g["val_std"]) < 1e-12, (g, vals)
assert len(r["groups"]) == 3 and r["runs"] == 6, r
PY

# Again: nothing to do.
$PY "$SWEEP" run "$T/real.json" --loco "$LOCO" >"$T/run2.out" 2>&1 || fail "second run failed"
[[ $(grep -c "^  start " "$T/run2.out") -eq 0 ]] || fail "second run reran cells"
grep -q "6 finished already" "$T/run2.out" || fail "second run did not see 6 finished cells"

# An interrupted cell (no summary.json): only it reruns; the others are untouched.
KEEP=$T/real/adamw/optimizer.lr=0.001/seed-1/summary.json
before=$(stat -c %Y.%s "$KEEP")
sleep 1
rm "$T/real/diloco/default/seed-1/summary.json"
$PY "$SWEEP" run "$T/real.json" --loco "$LOCO" >"$T/run3.out" 2>&1 || fail "third run failed"
[[ $(grep -c "^  start " "$T/run3.out") -eq 1 ]] || fail "third run did not rerun exactly 1 cell"
grep -q "start diloco default seed 1" "$T/run3.out" || fail "third run reran the wrong cell"
grep -q "removed the unfinished run" "$T/run3.out" || fail "the unfinished run was not removed"
[[ $(stat -c %Y.%s "$KEEP") == "$before" ]] || fail "a finished cell was touched"
[[ -f $T/real/diloco/default/seed-1/summary.json ]] || fail "the rerun cell has no summary"

# ---------------------------------------------------------------- two stages
cat >"$T/two.json" <<EOF
{"out": "$T/two", "seeds": {"tune": [1], "final": [1, 2]}, "workers": 1,
 "set": {$TINY},
 "methods": [{"name": "adamw", "config": "$SRC/configs/tiny.json",
              "grid": {"optimizer.lr": [0.0001, 0.003]}}]}
EOF
$PY "$SWEEP" run "$T/two.json" --loco "$LOCO" >"$T/two.out" 2>&1 || fail "two-stage sweep failed"
[[ $(grep -c "^  start " "$T/two.out") -eq 3 ]] || fail "two-stage: expected 2 tune + 1 final cells"
best=$($PY -c "import json,sys; print(json.load(open(sys.argv[1]))['best']['adamw'])" "$T/two/results.json")
[[ -f $T/two/adamw/$best/seed-2/summary.json ]] || fail "two-stage: seed 2 not run at the best point $best"
other=optimizer.lr=0.0001
[[ $best == "$other" ]] && other=optimizer.lr=0.003
[[ ! -e $T/two/adamw/$other/seed-2 ]] || fail "two-stage: seed 2 run at the other point"

# ---------------------------------------------------------------- bad definitions
echo '{"methods": []}' >"$T/bad1.json"
echo '{"methods": [{"name": "x"}]}' >"$T/bad2.json"
echo '{"methods": [{"name": "x", "config": "c"}], "sedes": [1]}' >"$T/bad3.json"
for b in bad1 bad2 bad3; do
  rc=0
  $PY "$SWEEP" plan "$T/$b.json" >"$T/$b.out" 2>&1 || rc=$?
  [[ $rc -eq 2 ]] || fail "$b: exit $rc, expected 2"
  grep -q "sweep: error: $T/$b.json" "$T/$b.out" || fail "$b: message lacks the file: $(cat "$T/$b.out")"
done
grep -q "unknown key 'sedes'" "$T/bad3.out" || fail "bad3: unknown key not named"

if ((fails)); then
  echo "$fails check(s) failed"
  exit 1
fi
echo "sweep: all checks passed"
