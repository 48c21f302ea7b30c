#!/usr/bin/env bash
# The embedded default: install, build, then train the tiny Llama with DiLoCo on the bundled
# King James Bible corpus — 4 MPI workers on the CPU — and print the communication report
# against DDP. Extra arguments go to `loco train` (e.g. --set training.steps=50).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1  # harmless when not root
WORKERS=${LOCO_WORKERS:-4}
# --overwrite: running the quick start again replaces its previous demo run (loco refuses
# to start over a run directory that holds a run unless asked to).
mpirun -np "$WORKERS" --oversubscribe --bind-to none -x OMP_NUM_THREADS=1 \
  build/loco train configs/tiny-diloco.json --out runs/quickstart --overwrite "$@"
