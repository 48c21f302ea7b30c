#!/usr/bin/env bash
# On a GPU machine: `loco train` with backend "cuda" on the 134M model (bundled KJV bytes, so no
# download), ~100 steps each:
#   - 1 rank, DiLoCo with outer.transport "nccl" (the outer sync through real NCCL);
#   - 2 ranks sharing the one GPU with outer.transport "mpi" (no NCCL communicator):
#     DiLoCo, SparseLoCo, MuLoCo;
# and prints one table row per run (final loss, val loss, tok/s, wall, bytes sent per worker,
# transports). Called by scripts/gpu-check.sh; record the table in docs/benchmarks.md with the
# card and the date.
# Usage: scripts/gpu-train-check.sh [STEPS]   (BUILD_DIR: default build-gpu; TRAIN_LOGS: logs)
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
BUILD=${BUILD_DIR:-build-gpu}
STEPS=${1:-100}
LOGS=${TRAIN_LOGS:-$BUILD/gpu-train-logs}  # per-run logs (not $OUT: few files come back)
RUNS=$(mktemp -d /tmp/loco-gpu-train.XXXXXX)
trap 'rm -rf "$RUNS"' EXIT
mkdir -p "$LOGS"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
COMMON=(--set backend=cuda --set data.train=data/kjv-train.bin --set data.val=data/kjv-val.bin
        --set training.steps="$STEPS" --set training.eval_interval=0 --set training.eval_batches=4
        --set training.log_interval=25 --set schedule.warmup_steps=10
        --set distributed.outer.interval=25 --set checkpoint.interval=0)
failed=0
rows=()
train() {  # train NAME NP CONFIG ARGS...
  local name=$1 np=$2 config=$3
  shift 3
  echo "==> $name: mpirun -np $np loco train configs/$config $*"
  mpirun -np "$np" --oversubscribe --bind-to none "$BUILD/loco" train "configs/$config" \
    "${COMMON[@]}" "$@" --out "$RUNS/$name" >"$LOGS/train-$name.log" 2>&1
  local rc=$?
  if ((rc != 0)); then
    failed=1
    rows+=("$name|FAIL (rc $rc)")
    tail -n 20 "$LOGS/train-$name.log"
    return
  fi
  rows+=("$name|$(python3 - "$RUNS/$name/summary.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
l = s["launch"]
print(f'{s["final_train_loss"]:.4f}|{s["final_val_loss"]:.4f}|{s["tokens_per_s"]:.0f}|'
      f'{s["wall_time_s"]:.1f}|{s["comm"]["sent_bytes_max_over_ranks"] / 1e6:.1f}|'
      f'{l["replica_transport"]} / {l["outer_transport"]}')
PY
)")
}
train diloco-1rank-nccl 1 134m-diloco.json --set distributed.outer.transport=nccl
train diloco-2ranks-shared-mpi 2 134m-diloco.json --set distributed.outer.transport=mpi
train sparseloco-2ranks-shared-mpi 2 134m-sparseloco.json --set distributed.outer.transport=mpi
train muloco-2ranks-shared-mpi 2 134m-muloco.json --set distributed.outer.transport=mpi

printf '\n%-30s %-10s %-10s %-10s %-8s %-12s %s\n' run "train loss" "val loss" "tok/s" "wall s" \
  "MB/worker" "replica / outer transport"
for r in "${rows[@]}"; do
  IFS='|' read -r name a b c d e f <<<"$r"
  printf '%-30s %-10s %-10s %-10s %-8s %-12s %s\n' "$name" "$a" "$b" "$c" "$d" "$e" "$f"
done
exit $failed
