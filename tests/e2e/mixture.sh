#!/usr/bin/env bash
# Training on a weighted mixture of sources (data.train as a list) with a second validation
# set (data.extra_val), end to end on a tiny model:
#  - per-rank checkpoints: a run killed after its step-4 checkpoint and resumed gives the
#    uninterrupted run's losses (bit for bit) and reads the same windows (LOCO_DATA_TRACE);
#  - the windows are a function of the deck slot alone: DiLoCo on 3 replicas, resumed on 2
#    (checkpoints at outer syncs), reads every deck slot once, and each slot's window is the
#    one a single process reads there;
#  - summary.json's per-source windows add up to the windows read; metrics carry val_losses;
#  - bad inputs: a source that matches no file, changed weights on resume (refused).
# Usage: mixture.sh <path to loco> <source dir>
set -euo pipefail
LOCO=$(realpath "$1")
SRC=$(realpath "$2")
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1

T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
cd "$T"
MPIRUN=(timeout -k 5 120 mpirun --allow-run-as-root --oversubscribe --bind-to none)
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }

# Two sources of different text: the first and a later part of the bundled corpus.
head -c 60000 "$SRC/data/kjv.txt" >new.txt
tail -c 30000 "$SRC/data/kjv.txt" >old.txt
"$LOCO" tokenize new.txt --train new-train.bin --val new-val.bin --val-fraction 0.1 >/dev/null
"$LOCO" tokenize old.txt --train old-train.bin --val old-val.bin --val-fraction 0.1 >/dev/null
MIX='[{"path": "new-train.bin", "weight": 0.75}, {"path": "old-train.bin", "weight": 0.25}]'
TINY=(--set model.d_model=32 --set model.n_layers=2 --set model.n_heads=2
      --set model.n_kv_heads=1 --set model.d_ff=64 --set model.max_seq_len=32
      --set training.seq_len=32 --set training.micro_batch=2 --set schedule.warmup_steps=1
      --set training.eval_batches=2 --set training.eval_interval=4
      --set "data.train=$MIX" --set data.val=new-val.bin
      --set 'data.extra_val=[{"name": "old", "path": "old-val.bin"}]')

run() { # run <name> <want exit> <np or 0 for no mpirun> args...
  local name=$1 want=$2 np=$3 rc=0
  shift 3
  if [[ $np == 0 ]]; then
    timeout -k 5 120 "$LOCO" train "$@" >"$T/$name.out" 2>&1 || rc=$?
  else
    "${MPIRUN[@]}" -np "$np" "$LOCO" train "$@" >"$T/$name.out" 2>&1 || rc=$?
  fi
  if [[ $rc -ne $want ]]; then
    fail "$name: exit $rc (want $want)"
    tail -15 "$T/$name.out"
  fi
}
expect_message() { grep -qF -- "$2" "$T/$1.out" || { fail "$1: no message \"$2\""; tail -8 "$T/$1.out"; }; }

# 1. Per-rank checkpoints: resume after step 4 of 8.
LOCO_DATA_TRACE=$T/trace-a run straight 0 0 "$SRC/configs/tiny.json" "${TINY[@]}" \
  --set training.steps=8 --out "$T/a"
run first-half 0 0 "$SRC/configs/tiny.json" "${TINY[@]}" --set training.steps=8 \
  --set checkpoint.interval=4 --out "$T/b"
rm -rf "$T/b/checkpoints/step-000008"
printf 'step-000004\n' >"$T/b/checkpoints/latest"
LOCO_DATA_TRACE=$T/trace-b run resumed 0 0 "$SRC/configs/tiny.json" "${TINY[@]}" \
  --set training.steps=8 --set checkpoint.interval=4 --out "$T/b" --resume latest
expect_message straight "0.7500 of the windows: "
expect_message straight "validation set \"old\""
python3 - "$T" <<'EOF' || fail "per-rank resume with a mixture"
import glob, json, sys
t = sys.argv[1]
def records(p):
    return [json.loads(l, parse_float=str) for l in open(p)]
a, b = records(f"{t}/a/metrics.jsonl"), records(f"{t}/b/metrics.jsonl")
la = {r["step"]: r["loss"] for r in a if "loss" in r}
lb = {r["step"]: r["loss"] for r in b if "loss" in r}
bad = [s for s in range(5, 9) if la[s] != lb.get(s)]
print("resumed losses, steps 5..8:", "identical" if not bad else f"DIFFER at {bad}")
va = [r for r in a if "val_losses" in r]
if [r["step"] for r in va] != [4, 8] or "old" not in va[-1]["val_losses"] or "val_loss" not in va[-1]:
    print("FAIL: val records", va); bad.append("val")
def trace(d, lo):
    rows = [l.split() for f in glob.glob(f"{d}/*.txt") for l in open(f)]
    return sorted(tuple(r) for r in rows if int(r[0]) >= lo)
ta, tb = trace(f"{t}/trace-a", 5), trace(f"{t}/trace-b", 5)
if ta != tb or len(ta) != 8 or any(len(r) != 8 for r in ta):
    print("FAIL: windows of steps 5..8 differ", ta[:3], tb[:3]); bad.append("trace")
else:
    print("windows of steps 5..8: identical (8 fields per line: source and deck slot)")
s = json.load(open(f"{t}/b/summary.json"))
reads = [x["windows_read"] for x in s["data_mixture"]]
if sum(reads) != 16 or reads != [12, 4]:
    print("FAIL: summary data_mixture", s["data_mixture"]); bad.append("summary")
if "old" not in s.get("final_val_losses", {}):
    print("FAIL: summary final_val_losses", s.get("final_val_losses")); bad.append("summary")
sys.exit(1 if bad else 0)
EOF

# 2. The same windows for any number of replicas: 3 DiLoCo replicas for 4 steps, 2 for 6 more
# (48 windows), against one process reading 48 windows (24 steps of 2).
ELASTIC=(--set distributed.outer.interval=2 --set checkpoint.at_sync=1 --set checkpoint.keep_last=0)
LOCO_DATA_TRACE=$T/trace-e run elastic-3 0 3 "$SRC/configs/tiny-diloco.json" "${TINY[@]}" \
  "${ELASTIC[@]}" --set training.steps=4 --out "$T/e"
LOCO_DATA_TRACE=$T/trace-e run elastic-2 0 2 "$SRC/configs/tiny-diloco.json" "${TINY[@]}" \
  "${ELASTIC[@]}" --set training.steps=10 --out "$T/e" --resume latest
LOCO_DATA_TRACE=$T/trace-1 run one-process 0 0 "$SRC/configs/tiny.json" "${TINY[@]}" \
  --set training.steps=24 --out "$T/one"
python3 - "$T" <<'EOF' || fail "mixture windows depend on the number of replicas"
import glob, json, sys
t = sys.argv[1]
def by_slot(d):
    out = {}
    for f in glob.glob(f"{d}/*.txt"):
        for l in open(f):
            step, epoch, slot, first, rep, reps, source, deck = l.split()
            if deck in out:
                print("FAIL: deck slot", deck, "read twice"); sys.exit(1)
            out[deck] = (source, epoch, slot, first)
    return out
e, one = by_slot(f"{t}/trace-e"), by_slot(f"{t}/trace-1")
if sorted(map(int, e)) != list(range(48)) or e != one:
    print("FAIL: elastic deck slots", sorted(map(int, e))[:10], "differ from one process's")
    sys.exit(1)
s = json.load(open(f"{t}/e/summary.json"))
reads = [x["windows_read"] for x in s["data_mixture"]]
if reads != [36, 12]:
    print("FAIL: summary data_mixture", s["data_mixture"]); sys.exit(1)
print("3 -> 2 replicas: deck slots 0..47 each read once, each the window one process reads there; 36 + 12 windows")
EOF

# 3. Bad inputs.
run no-match 2 0 "$SRC/configs/tiny.json" "${TINY[@]}" --out "$T/bad1" \
  --set 'data.train=[{"path": "new-train.bin", "weight": 1}, {"path": "gone-*.bin", "weight": 1}]'
expect_message no-match 'data.train[1].path = "gone-*.bin": matches no file'
run bad-weight 2 0 "$SRC/configs/tiny.json" "${TINY[@]}" --out "$T/bad2" \
  --set 'data.train=[{"path": "new-train.bin", "weight": 1}, {"path": "old-train.bin", "weight": 0}]'
expect_message bad-weight 'data.train[1].weight = 0: must be > 0'
run reweighted 2 0 "$SRC/configs/tiny.json" "${TINY[@]}" --set training.steps=8 \
  --set checkpoint.interval=4 --out "$T/b" --resume latest \
  --set 'data.train=[{"path": "new-train.bin", "weight": 0.5}, {"path": "old-train.bin", "weight": 0.5}]'
expect_message reweighted "the training data changed since the checkpoint"

if [[ $fails -gt 0 ]]; then
  echo "mixture: $fails failure(s)"
  exit 1
fi
echo "mixture: all checks passed"
