#!/usr/bin/env bash
# Configure and build loco into build/ (Release). CUDA parts build when nvcc is found;
# pass LOCO_CPU_ONLY=1 to skip them (faster on machines without a GPU).
set -euo pipefail
cd "$(dirname "$0")/.."
args=(-S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release)
[[ "${LOCO_CPU_ONLY:-0}" == 1 ]] && args+=(-DLOCO_ENABLE_CUDA=OFF)
cmake "${args[@]}" >/dev/null
cmake --build build -j "$(nproc)"
