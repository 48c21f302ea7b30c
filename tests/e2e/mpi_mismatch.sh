#!/usr/bin/env bash
# Ranks that disagree stop at start-up, together and quickly, with a message naming what
# differs. Open MPI MPMD syntax gives each rank its own command line:
#   mpirun -np 1 loco train c.json --set training.seed=1 : -np 1 loco train c.json --set training.seed=2
# Cases: a config value (the seed), the training data (same config, other token content).
# Usage: mpi_mismatch.sh <path to loco> <source dir>
set -euo pipefail
LOCO=$(realpath "$1")
SRC=$2
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
MPIRUN=(timeout -k 5 30 mpirun --allow-run-as-root --oversubscribe --bind-to none)

T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
cd "$T"
CONFIG=$SRC/configs/tiny-ddp.json
TINY=(--set model.d_model=32 --set model.n_layers=2 --set model.n_heads=2
      --set model.n_kv_heads=1 --set model.d_ff=64 --set model.max_seq_len=32
      --set training.seq_len=32 --set training.micro_batch=2 --set training.steps=4
      --set schedule.warmup_steps=1 --set training.eval_interval=0 --set distributed.timeout_s=20)
fails=0

# run_mpmd <name> <expected stderr substring>... -- <rank 0 args> -- <rank 1 args>
run_mpmd() {
  local name=$1; shift
  local expected=()
  while [[ $1 != -- ]]; do expected+=("$1"); shift; done
  shift
  local a0=()
  while [[ $1 != -- ]]; do a0+=("$1"); shift; done
  shift
  local a1=("$@")
  local rc=0 t0 t1
  t0=$(date +%s.%N)
  "${MPIRUN[@]}" -np 1 "$LOCO" train "$CONFIG" "${TINY[@]}" "${a0[@]}" --out "$T/$name" \
    : -np 1 "$LOCO" train "$CONFIG" "${TINY[@]}" "${a1[@]}" --out "$T/$name" \
    >"$T/$name.out" 2>"$T/$name.err" || rc=$?
  t1=$(date +%s.%N)
  local took
  took=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
  echo "$name: exit $rc after $took s"
  if [[ $rc -eq 0 ]]; then
    echo "FAIL $name: mismatched ranks exited 0"; fails=$((fails + 1))
  fi
  if [[ $rc -eq 124 || $rc -eq 137 ]] || awk -v t="$took" 'BEGIN { exit !(t > 30) }'; then
    echo "FAIL $name: did not finish within 30 s"; fails=$((fails + 1))
  fi
  for e in "${expected[@]}"; do
    if ! grep -qF -- "$e" "$T/$name.err"; then
      echo "FAIL $name: stderr does not contain: $e"; fails=$((fails + 1))
    fi
  done
  # No training happened: no step was logged.
  if [[ -s $T/$name/metrics.jsonl ]]; then
    echo "FAIL $name: metrics were written"; fails=$((fails + 1))
  fi
  grep '^error' "$T/$name.err" || true
}

run_mpmd seed 'ranks disagree on the resolved config' 'rank(s) 1 differ' \
  -- --set training.seed=1 -- --set training.seed=2
run_mpmd model 'ranks disagree on the resolved config' \
  -- -- --set model.d_ff=96
# Same config (data paths are not compared: they may differ between nodes), other tokens.
run_mpmd data 'ranks disagree on the training data' 'rank(s) 1 differ' \
  -- -- --set "data.train=$SRC/data/kjv-val.bin"

# And the control: identical command lines train normally.
rc=0
"${MPIRUN[@]}" -np 1 "$LOCO" train "$CONFIG" "${TINY[@]}" --out "$T/same" \
  : -np 1 "$LOCO" train "$CONFIG" "${TINY[@]}" --out "$T/same" >"$T/same.out" 2>&1 || rc=$?
if [[ $rc -ne 0 ]]; then
  echo "FAIL control: identical ranks exited $rc"; cat "$T/same.out"; fails=$((fails + 1))
fi
steps=$(grep -c '"loss"' "$T/same/metrics.jsonl" || true)
if [[ $steps -ne 4 ]]; then
  echo "FAIL control: $steps step records (want 4)"; fails=$((fails + 1))
fi

if [[ $fails -ne 0 ]]; then
  echo "$fails failure(s)"
  exit 1
fi
echo "mismatches detected"
