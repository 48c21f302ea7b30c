#!/usr/bin/env bash
# A rank that dies (SIGKILL) or hangs (SIGSTOP) in the middle of a 2-rank run must not leave
# the job hanging: mpirun exits non-zero within ~30 s. With a stopped rank the survivor's
# collective times out after distributed.timeout_s = 5 and says so.
# Usage: mpi_dead_rank.sh <path to loco> <source dir>
set -euo pipefail
LOCO=$(realpath "$1")
SRC=$2
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1

T=$(mktemp -d)
RUNNING=""  # the `timeout mpirun` job in flight, if any (it takes its ranks down with it)
STOPPED=""  # a rank this script stopped, until its job is over
cleanup() {
  [[ -n $STOPPED ]] && kill -KILL "$STOPPED" 2>/dev/null || true
  [[ -n $RUNNING ]] && kill -TERM "$RUNNING" 2>/dev/null || true
  rm -rf "$T"
}
trap cleanup EXIT
cd "$T"
CONFIG=$SRC/configs/tiny-ddp.json
# Long enough to still be running when the signal arrives (~100k steps ≈ minutes).
ARGS=(--set model.d_model=32 --set model.n_layers=2 --set model.n_heads=2
      --set model.n_kv_heads=1 --set model.d_ff=64 --set model.max_seq_len=32
      --set training.seq_len=32 --set training.micro_batch=2 --set training.steps=100000
      --set schedule.warmup_steps=1 --set training.eval_interval=0
      --set training.log_interval=100000 --set distributed.timeout_s=5)
fails=0

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

# run_and_signal <name> <signal>: starts a 2-rank run, waits until it is stepping, sends
# <signal> to world rank 1 and measures how long mpirun takes to exit.
run_and_signal() {
  local name=$1 sig=$2 dir=$T/$1
  timeout -k 5 90 mpirun --allow-run-as-root --oversubscribe --bind-to none -np 2 \
    "$LOCO" train "$CONFIG" "${ARGS[@]}" --out "$dir" >"$T/$name.out" 2>"$T/$name.err" &
  local tpid=$! mpid="" r1="" i
  RUNNING=$tpid
  # mpirun is timeout's child; the ranks are mpirun's children.
  for i in $(seq 100); do
    mpid=$(pgrep -P "$tpid" | head -n 1 || true)
    [[ -n $mpid ]] && break
    sleep 0.1
  done
  # Wait until it has logged a few steps (both ranks are then inside the training loop).
  for i in $(seq 300); do
    if [[ -f $dir/metrics.jsonl ]] && [[ $(grep -c '"loss"' "$dir/metrics.jsonl" || true) -ge 5 ]]; then
      break
    fi
    sleep 0.1
  done
  if ! [[ -f $dir/metrics.jsonl ]]; then
    echo "FAIL $name: the run never started stepping"; cat "$T/$name.err"
    fails=$((fails + 1))
    return
  fi
  local p
  for p in $(pgrep -P "$mpid" || true); do
    if tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx 'OMPI_COMM_WORLD_RANK=1'; then
      r1=$p
    fi
  done
  if [[ -z $r1 ]]; then
    echo "FAIL $name: could not find world rank 1 among mpirun's children"
    fails=$((fails + 1))
    return
  fi
  local steps_before
  steps_before=$(grep -c '"loss"' "$dir/metrics.jsonl" || true)
  local t0 t1 rc=0
  t0=$(now)
  [[ $sig == STOP ]] && STOPPED=$r1
  kill "-$sig" "$r1"
  wait "$tpid" || rc=$?
  t1=$(now)
  RUNNING=""
  # mpirun's abort has normally killed a stopped rank already; make sure.
  if [[ -n $STOPPED ]]; then
    kill -KILL "$STOPPED" 2>/dev/null || true
    STOPPED=""
  fi
  local took
  took=$(elapsed "$t0" "$t1")
  echo "$name: SIG$sig to rank 1 (pid $r1) after $steps_before steps; mpirun exited $rc after $took s"
  if [[ $rc -eq 0 ]]; then
    echo "FAIL $name: mpirun exited 0"; fails=$((fails + 1))
  fi
  if [[ $rc -eq 124 ]] || awk -v t="$took" 'BEGIN { exit !(t > 30) }'; then
    echo "FAIL $name: the job hung (took $took s)"; fails=$((fails + 1))
  fi
  # The run ended abnormally: no summary of a finished run.
  if [[ -e $dir/summary.json ]]; then
    echo "FAIL $name: summary.json was written"; fails=$((fails + 1))
  fi
  LAST_TOOK=$took
}

run_and_signal dead KILL

run_and_signal stuck STOP
# Nothing but the 5 s collective timeout can end this one.
if awk -v t="${LAST_TOOK:-0}" 'BEGIN { exit !(t < 4.5) }'; then
  echo "FAIL stuck: ended after ${LAST_TOOK:-?} s, before the 5 s timeout could fire"
  fails=$((fails + 1))
fi
# The survivor (rank 0) timed out in a collective and said so.
if ! grep -q 'rank 0: collective .* did not complete within 5 s on rank 0 of 2' "$T/stuck.err"; then
  echo "FAIL stuck: rank 0 did not report the collective timeout:"; cat "$T/stuck.err"
  fails=$((fails + 1))
fi
grep -m1 'did not complete' "$T/stuck.err" || true

if [[ $fails -ne 0 ]]; then
  echo "$fails failure(s)"
  exit 1
fi
echo "dead and stuck ranks end the job"
