#!/usr/bin/env bash
# Installs dependencies, builds, and runs the whole test suite: the CUDA code in the CPU
# emulator (GPU tests and multi-rank CUDA training; when the CUDA headers are present), then
# unit, MPI, end-to-end and emulated-cluster tests.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
if [[ -f /usr/local/cuda/include/cuda_runtime_api.h && "${LOCO_SKIP_EMU:-0}" != 1 ]]; then
  scripts/emu-check.sh --all
else
  echo "test.sh: no CUDA headers (or LOCO_SKIP_EMU=1): skipping the emulated CUDA checks"
fi
ctest --test-dir build --output-on-failure -j 2 -LE gpu "$@"
