#!/usr/bin/env bash
# `backend: cuda` on a machine without a usable GPU: `mpirun -np 2 loco train` exits 2, every
# rank prints the same message naming the ranks without a GPU, and nothing is written. (Skips
# on a machine with a GPU: there the run would start.)
# Usage: cuda_without_gpu.sh <path to loco> <source dir>
set -uo pipefail
LOCO=$(realpath "$1")
SRC=$2
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
  echo "SKIP: this machine has a GPU"
  exit 0
fi
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
cd "$T"
timeout -k 5 60 mpirun --allow-run-as-root --oversubscribe --bind-to none -np 2 "$LOCO" train \
  "$SRC/configs/tiny-ddp.json" --set backend=cuda --out "$T/run" >"$T/out" 2>&1
rc=$?
cat "$T/out"
fails=0
[[ $rc == 2 ]] || { echo "FAIL: exit $rc, want 2"; fails=$((fails + 1)); }
for r in 0 1; do
  grep -q "^error: rank $r: backend = \"cuda\" but rank(s) 0 and 1 of 2 have no usable CUDA device" \
    "$T/out" || { echo "FAIL: rank $r did not say which ranks have no GPU"; fails=$((fails + 1)); }
done
[[ ! -e $T/run ]] || { echo "FAIL: the run directory was created"; fails=$((fails + 1)); }
((fails == 0)) && echo "cuda without a GPU: refused on every rank, exit 2, nothing written"
exit $((fails > 0))
