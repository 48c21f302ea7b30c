#!/usr/bin/env bash
# Checkpoints and exact resume, end to end (tiny model, 8 steps, checkpoint every 4):
#  - for single-process, DDP (mpirun -np 2), DiLoCo, SparseLoCo (error feedback), MuLoCo
#    (Muon) (mpirun -np 2, outer.interval 2), overlapped DiLoCo (interval 3, overlap 2) and
#    Streaming DiLoCo fragments (2 fragments; dense with overlap, and SparseLoCo):
#    an uninterrupted 8-step run (A) and a run with checkpoint.interval=4 (B) that is killed
#    (SIGKILL, single process) right after its step-4 checkpoint, then resumed with
#    `--resume latest` into the same run directory: the losses of steps 5..8 in B's
#    metrics.jsonl (the resumed records, appended) must equal A's bit for bit (compared as
#    the JSON number strings);
#  - a truncated rank file: `--resume` fails, naming the file, exit != 0;
#  - a checkpoint of another model shape: `--resume` fails with "does not match".
# The MPI runs are not killed (killing mpirun can leave ranks behind): they run to the end,
# and the state a kill after step 4 leaves on disk is recreated (step-8 directory removed,
# latest pointing at step 4).
# Usage: resume_exact.sh <path to loco> <source dir>
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
MPIRUN=(timeout -k 5 60 mpirun --allow-run-as-root --oversubscribe --bind-to none -np 2)
TINY=(--set model.d_model=32 --set model.n_layers=2 --set model.n_heads=2
      --set model.n_kv_heads=1 --set model.d_ff=64 --set model.max_seq_len=32
      --set training.seq_len=32 --set training.micro_batch=2 --set schedule.warmup_steps=1
      --set training.eval_batches=2 --set training.eval_interval=0
      --set training.steps=8)
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }

latest_of() { cat "$1/checkpoints/latest" 2>/dev/null || true; }

# Recreates what a SIGKILL right after the step-4 checkpoint leaves on disk.
rewind_to_step4() {
  local root=$1/checkpoints
  [[ -f $root/step-000004/rank-0.bin ]] || { fail "$1: no step-4 checkpoint"; return 1; }
  if [[ $(latest_of "$1") != step-000004 ]]; then
    rm -rf "$root/step-000008"
    printf 'step-000004\n' >"$root/latest"
  fi
}

compare() {  # compare NAME A_DIR B_DIR
  python3 - "$1" "$2/metrics.jsonl" "$3/metrics.jsonl" <<'EOF' || fail "$1: resumed losses differ"
import json, sys
name, a, b = sys.argv[1:]
def losses(path):
    out = {}
    for line in open(path):
        r = json.loads(line, parse_float=str)  # keep the numbers' exact text
        if "loss" in r:
            out[r["step"]] = r["loss"]  # the last record of a step wins (the resumed one)
    return out
la, lb = losses(a), losses(b)
ok = True
for s in range(5, 9):
    same = la.get(s) is not None and la.get(s) == lb.get(s)
    ok &= same
    print("%s step %d: uninterrupted %s resumed %s %s" % (name, s, la.get(s), lb.get(s),
                                                           "ok" if same else "DIFFERENT"))
sys.exit(0 if ok else 1)
EOF
}

# ---------------------------------------------------------------- single process
CONFIG=$SRC/configs/tiny.json
A=$T/single-a
B=$T/single-b
rc=0
timeout 60 "$LOCO" train "$CONFIG" "${TINY[@]}" --out "$A" >"$T/single-a.out" 2>&1 || rc=$?
[[ $rc -eq 0 ]] || { fail "single: uninterrupted run exited $rc"; cat "$T/single-a.out"; }
"$LOCO" train "$CONFIG" "${TINY[@]}" --set checkpoint.interval=4 --out "$B" \
  >"$T/single-b.out" 2>&1 &
RUNNING=$!
for _ in $(seq 600); do
  [[ -n $(latest_of "$B") ]] && break
  kill -0 "$RUNNING" 2>/dev/null || break
  sleep 0.02
done
kill -KILL "$RUNNING" 2>/dev/null || true
wait "$RUNNING" 2>/dev/null || true
RUNNING=""
echo "single: killed with latest = $(latest_of "$B")"
rewind_to_step4 "$B"
rc=0
timeout 60 "$LOCO" train "$CONFIG" "${TINY[@]}" --set checkpoint.interval=4 --out "$B" \
  --resume latest >"$T/single-c.out" 2>&1 || rc=$?
[[ $rc -eq 0 ]] || { fail "single: resume exited $rc"; cat "$T/single-c.out"; }
grep -q "resuming from .*step-000004 at step 4" "$T/single-c.out" ||
  fail "single: no 'resuming from ... at step 4' line"
compare single "$A" "$B"
[[ $(latest_of "$B") == step-000008 ]] || fail "single: latest is not step-000008 after resume"

# A checkpoint of another model shape is refused.
rc=0
timeout 60 "$LOCO" train "$CONFIG" "${TINY[@]}" --set model.d_model=64 --out "$T/other" \
  --resume "$B/checkpoints/step-000004" >"$T/other.out" 2>&1 || rc=$?
[[ $rc -ne 0 ]] || fail "resume with another d_model exited 0"
grep -q "does not match" "$T/other.out" || { fail "no 'does not match' message"; cat "$T/other.out"; }

# A truncated rank file is refused, naming the file.
F=$B/checkpoints/step-000004/rank-0.bin
truncate -s $(($(stat -c %s "$F") / 2)) "$F"
rc=0
timeout 60 "$LOCO" train "$CONFIG" "${TINY[@]}" --out "$T/corrupt" \
  --resume "$B/checkpoints/step-000004" >"$T/corrupt.out" 2>&1 || rc=$?
[[ $rc -ne 0 ]] || fail "resume from a truncated checkpoint exited 0"
grep -qF "$F" "$T/corrupt.out" || { fail "corrupt-checkpoint error does not name $F"; cat "$T/corrupt.out"; }

# ---------------------------------------------------------------- DDP and DiLoCo, 2 ranks
mpi_case() {  # mpi_case NAME CONFIG EXTRA...
  local name=$1 config=$2
  shift 2
  local a=$T/$name-a b=$T/$name-b rc=0
  "${MPIRUN[@]}" "$LOCO" train "$config" "${TINY[@]}" "$@" --out "$a" >"$T/$name-a.out" 2>&1 ||
    rc=$?
  [[ $rc -eq 0 ]] || { fail "$name: uninterrupted run exited $rc"; cat "$T/$name-a.out"; }
  rc=0
  "${MPIRUN[@]}" "$LOCO" train "$config" "${TINY[@]}" "$@" --set checkpoint.interval=4 \
    --out "$b" >"$T/$name-b.out" 2>&1 || rc=$?
  [[ $rc -eq 0 ]] || { fail "$name: checkpointing run exited $rc"; cat "$T/$name-b.out"; }
  [[ -f $b/checkpoints/step-000004/rank-1.bin ]] || fail "$name: no rank-1 file at step 4"
  rewind_to_step4 "$b" || return 0
  rc=0
  "${MPIRUN[@]}" "$LOCO" train "$config" "${TINY[@]}" "$@" --set checkpoint.interval=4 \
    --out "$b" --resume latest >"$T/$name-c.out" 2>&1 || rc=$?
  [[ $rc -eq 0 ]] || { fail "$name: resume exited $rc"; cat "$T/$name-c.out"; }
  compare "$name" "$a" "$b"
}
mpi_case ddp "$SRC/configs/tiny-ddp.json"
mpi_case diloco "$SRC/configs/tiny-diloco.json" --set distributed.outer.interval=2
# Compressed outer sync with error feedback (EF buffer + sync counter), and Muon inner steps.
mpi_case sparseloco "$SRC/configs/tiny-sparseloco.json" --set distributed.outer.interval=2
mpi_case muloco "$SRC/configs/tiny-muloco.json" --set distributed.outer.interval=2
# Overlapped outer syncs (H 3, τ 2): the sync started at step 3 is completed early by the
# step-4 checkpoint (a checkpoint never holds a sync in flight), so the uninterrupted run
# checkpoints too, to take the same path.
mpi_case streaming "$SRC/configs/tiny-streaming.json" --set distributed.outer.interval=3 \
  --set distributed.outer.overlap_steps=2 --set checkpoint.interval=4
# Streaming fragments (2 fragments of the 2 layers, H 4, τ 1): fragment 1 starts at 2 and
# completes at 3, fragment 0 is due at 4 together with the checkpoint (so it blocks), then
# 6 → 7 and the final sync of both at 8. Dense, and compressed with per-fragment error
# feedback (H 2: fragment 1 syncs at the odd steps, fragment 0 at the even ones).
mpi_case fragments "$SRC/configs/tiny-streaming-fragments.json" \
  --set distributed.outer.interval=4 --set distributed.outer.overlap_steps=1 \
  --set checkpoint.interval=4
mpi_case fragments-sparse "$SRC/configs/tiny-sparseloco.json" --set distributed.outer.interval=2 \
  --set distributed.outer.fragments=2

if [[ $fails -ne 0 ]]; then
  echo "$fails failure(s)"
  exit 1
fi
echo "resume_exact: all checks passed"
