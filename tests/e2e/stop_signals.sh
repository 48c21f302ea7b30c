#!/usr/bin/env bash
# Stopping by a signal, directly and through mpirun:
#  - SIGTERM to loco: it finishes the step, writes a checkpoint and summary.json, and exits
#    with 128 + 15 = 143;
#  - with a grace period too short for that (LOCO_STOP_GRACE_S, as under a launcher that
#    kills soon after SIGTERM), it says so and exits 143 at once, keeping the last checkpoint;
#  - `kill -TERM <mpirun>` of a 2-rank run: mpirun sends SIGTERM to the ranks one second
#    later and SIGKILL one second after that; the ranks exit 143 with a stop message and
#    `latest` names a step that holds both ranks' files (mpirun itself exits 1: Open MPI's
#    choice for a job it was asked to terminate);
#  - `kill -USR1 <mpirun>`: forwarded without a kill, a graceful stop with a checkpoint; every
#    rank (and mpirun) exits 128 + 10 = 138.
# Usage: stop_signals.sh <path to loco> <source dir>
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
TINY=(--set model.d_model=32 --set model.n_layers=2 --set model.n_heads=2
      --set model.n_kv_heads=1 --set model.d_ff=64 --set model.max_seq_len=32
      --set training.seq_len=32 --set training.micro_batch=2 --set schedule.warmup_steps=1
      --set training.eval_batches=2 --set training.eval_interval=0 --set training.steps=100000
      --set training.log_interval=100000 --set checkpoint.interval=2)
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
latest_of() { cat "$1/checkpoints/latest" 2>/dev/null || true; }
# Waits (at most 60 s) until the run in $1 has 3 step records and a checkpoint.
wait_for_progress() {
  for _ in $(seq 1200); do
    if [[ -n $(latest_of "$1") ]] && [[ $(grep -c '"loss"' "$1/metrics.jsonl" 2>/dev/null || true) -ge 3 ]]; then
      return 0
    fi
    sleep 0.05
  done
  fail "$1: no progress within 60 s"
}
wait_for_exit() {  # wait_for_exit PID: sets $rc to its exit code (SIGKILL after 60 s)
  for _ in $(seq 1200); do
    kill -0 "$1" 2>/dev/null || break
    sleep 0.05
  done
  kill -0 "$1" 2>/dev/null && { fail "pid $1 did not stop within 60 s"; kill -KILL "$1"; }
  rc=0
  wait "$1" || rc=$?
}
# Checks `latest` names a step whose files exist for ranks 0..$2-1; prints the step.
check_latest() {
  local dir=$1 ranks=$2 name
  name=$(latest_of "$dir")
  [[ -n $name ]] || { fail "$dir: no latest checkpoint"; return; }
  for ((r = 0; r < ranks; ++r)); do
    [[ -f $dir/checkpoints/$name/rank-$r.bin ]] || fail "$dir: latest $name lacks rank-$r.bin"
  done
  echo "$((10#${name#step-}))"
}
summary_steps() { python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); assert s["stopped_early"]; print(s["steps"])' "$1/summary.json"; }

# ---------------------------------------------------------------- SIGTERM to loco
D=$T/term
"$LOCO" train "$SRC/configs/tiny.json" "${TINY[@]}" --out "$D" >"$T/term.out" 2>&1 &
RUNNING=$!
wait_for_progress "$D"
kill -TERM "$RUNNING"
wait_for_exit "$RUNNING"
RUNNING=""
[[ $rc -eq 143 ]] || { fail "SIGTERM: exit $rc (want 143)"; tail -5 "$T/term.out"; }
grep -q "stop requested: stopped after step" "$T/term.out" || fail "SIGTERM: no stop message"
steps=$(summary_steps "$D" || echo none)
[[ $(check_latest "$D" 1) == "$steps" ]] || fail "SIGTERM: latest $(latest_of "$D") is not the stop step $steps"

# ---------------------------------------------------------------- too little time: exit at once
D=$T/hurry
LOCO_STOP_GRACE_S=0.001 "$LOCO" train "$SRC/configs/tiny.json" "${TINY[@]}" --out "$D" \
  >"$T/hurry.out" 2>&1 &
RUNNING=$!
wait_for_progress "$D"
kill -TERM "$RUNNING"
wait_for_exit "$RUNNING"
RUNNING=""
[[ $rc -eq 143 ]] || { fail "hurried SIGTERM: exit $rc (want 143)"; tail -5 "$T/hurry.out"; }
grep -q "stop requested (SIGTERM): .*exiting now (code 143) without a new checkpoint; the last one is step" "$T/hurry.out" ||
  { fail "hurried SIGTERM: no 'exiting now' message"; tail -5 "$T/hurry.out"; }
check_latest "$D" 1 >/dev/null
[[ ! -e $D/summary.json ]] || fail "hurried SIGTERM wrote summary.json (it should exit at once)"

# ---------------------------------------------------------------- through mpirun
# The wrapper records each rank's exit code (mpirun reports only its own).
cat >"$T/record-exit.sh" <<'SH'
#!/usr/bin/env bash
# Ignored here, the signals still reach loco (mpirun signals the process group, and loco
# installs its own handlers over the inherited "ignore"); this shell survives to write down
# loco's exit code, unless mpirun's SIGKILL comes first.
trap '' TERM USR1
rc=0
"$@" || rc=$?
echo "$rc" >"$STATUS_DIR/rank-$OMPI_COMM_WORLD_RANK"
exit "$rc"
SH
chmod +x "$T/record-exit.sh"
mpi_stop() {  # mpi_stop NAME SIGNAL WANT_RC
  local name=$1 sig=$2 want=$3
  local D=$T/$name
  mkdir -p "$T/$name-status"
  STATUS_DIR=$T/$name-status mpirun --allow-run-as-root --oversubscribe --bind-to none -np 2 \
    -x STATUS_DIR -x OMP_NUM_THREADS "$T/record-exit.sh" "$LOCO" train "$SRC/configs/tiny-ddp.json" \
    "${TINY[@]}" --out "$D" >"$T/$name.out" 2>&1 &
  RUNNING=$!
  wait_for_progress "$D"
  kill "-$sig" "$RUNNING"
  wait_for_exit "$RUNNING"
  local mpirun_rc=$rc
  RUNNING=""
  echo "$name: mpirun exited $mpirun_rc"
  # Once one rank has exited with a non-zero code, mpirun ends the others at once, so a
  # rank may be gone before its wrapper wrote its code down: every code that was written
  # must be the right one, and at least one must have been written.
  local recorded=0
  for r in 0 1; do
    local got
    got=$(cat "$T/$name-status/rank-$r" 2>/dev/null || echo "")
    if [[ -z $got ]]; then
      echo "$name: rank $r was ended by mpirun before its exit code was recorded"
      continue
    fi
    recorded=$((recorded + 1))
    [[ $got == "$want" ]] || { fail "$name: rank $r exited $got (want $want)"; tail -20 "$T/$name.out"; }
  done
  [[ $recorded -gt 0 ]] || { fail "$name: no rank's exit code was recorded"; tail -20 "$T/$name.out"; }
  grep -q "stop requested" "$T/$name.out" || fail "$name: no stop message"
  local latest
  latest=$(check_latest "$D" 2)
  if grep -q "exiting now" "$T/$name.out"; then
    # The machine was too slow to finish a step and a checkpoint in half a second: the
    # ranks left at once, keeping the last complete checkpoint (said in the message).
    echo "$name: stopped at once (too little time for a checkpoint); latest is step $latest"
  else
    local steps
    steps=$(summary_steps "$D" || echo none)
    [[ $latest == "$steps" ]] || fail "$name: latest step $latest is not the stop step $steps"
    echo "$name: stopped after step $steps with a checkpoint"
  fi
  [[ $sig != USR1 || $mpirun_rc -eq $want ]] || fail "$name: mpirun exited $mpirun_rc (want $want)"
}
mpi_stop mpirun-term TERM 143
mpi_stop mpirun-usr1 USR1 138
grep -q "exiting now" "$T/mpirun-usr1.out" && fail "SIGUSR1 must always stop gracefully"

if [[ $fails -ne 0 ]]; then
  echo "$fails failure(s)"
  exit 1
fi
echo "stop_signals: all checks passed"
