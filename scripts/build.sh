#!/usr/bin/env bash
# Configure and build loco into build/ (Release). CUDA parts build when nvcc is found;
# pass LOCO_CPU_ONLY=1 to skip them (faster on machines without a GPU).
set -euo pipefail
cd "$(dirname "$0")/.."
preset=${LOCO_PRESET:-release}  # CMakePresets.json (CI: ci, warnings as errors)
[[ "${LOCO_CPU_ONLY:-0}" == 1 ]] && preset=cpu-only
cmake --preset "$preset" >/dev/null
cmake --build build -j "$(nproc)"
