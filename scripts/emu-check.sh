#!/usr/bin/env bash
# The CUDA code without a GPU: loco built for the CPU emulator (tests/emu/; CMake option
# LOCO_EMULATE_CUDA): every CUDA kernel runs as fibers on the CPU, behind the real CUDA host code
# (src/cuda/cuda_backend.cpp, the NCCL communicator, the runtime), with host-memory stand-ins for
# cudart and cuBLASLt and an NCCL stand-in over MPI. It checks indexing, shared memory, barriers,
# warp collectives, the host-side launch code and the multi-rank NCCL path; it cannot check GPU
# float behaviour (flush-to-zero, fast math), races or speed (tests/emu/cuda_emu.hpp).
# Needs the CUDA toolkit headers (/usr/local/cuda/include), nothing else of the toolkit.
#
# Usage: scripts/emu-check.sh [--multi-rank | --all] [test ...]
#   (default)     the GPU test binaries tests/gpu/gpu_test_<name>.cpp: kernels backend_smoke
#                 muon compress nccl step, or the names given
#   --multi-rank  `mpirun -np 2|4 loco train` with backend "cuda" beside the CPU backend:
#                 DDP, DiLoCo over NCCL and over MPI, SparseLoCo, MuLoCo, replicas 2x2,
#                 streaming, and the refused launches (tests/emu/multi_rank.sh)
#   --all         both
# Builds into build-emu/ (BUILD_DIR). EMU_CATCH_ARGS: Catch2 arguments for every test binary
# (default "~[attention-large]": the B=4, T=1024 attention cases are slow as fibers).
# Ends with "N passed, M failed"; exit 1 when anything failed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT=${BUILD_DIR:-build-emu}
CUDA_INC=${CUDA_INC:-/usr/local/cuda/include}
single=1 multi=0
case ${1:-} in
  --multi-rank) single=0 multi=1; shift ;;
  --all) multi=1; shift ;;
esac
TESTS=("$@")
((${#TESTS[@]})) || TESTS=(kernels backend_smoke muon compress nccl step)
[[ -f $CUDA_INC/cuda_runtime_api.h ]] || { echo "no CUDA headers in $CUDA_INC"; exit 1; }
T0=$SECONDS

cmake --preset emu -B "$OUT" >/dev/null  # CMakePresets.json
targets=()
((multi)) && targets+=(loco)
if ((single)); then for t in "${TESTS[@]}"; do targets+=("gpu_test_$t"); done; fi
cmake --build "$OUT" -j "$(nproc)" --target "${targets[@]}"

passed=0 failed=0 failures=()
if ((single)); then
  for t in "${TESTS[@]}"; do
    echo "==> emulated gpu_test_$t"
    # shellcheck disable=SC2086
    if OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 \
       "$OUT/tests/gpu_test_$t" ${EMU_CATCH_ARGS-"~[attention-large]"}; then
      passed=$((passed + 1))
    else
      failed=$((failed + 1)); failures+=("gpu_test_$t")
    fi
  done
fi
if ((multi)); then
  echo "==> emulated multi-rank training (tests/emu/multi_rank.sh)"
  log=$(mktemp)
  tests/emu/multi_rank.sh "$OUT" | tee "$log" || true
  read -r p f < <(sed -n 's/^\([0-9]*\) passed, \([0-9]*\) failed$/\1 \2/p' "$log" | tail -1)
  rm -f "$log"
  if [[ -z ${p:-} ]]; then failed=$((failed + 1)); failures+=("multi-rank (no summary line)")
  else
    passed=$((passed + p)); failed=$((failed + f))
    ((f == 0)) || failures+=("multi-rank ($f checks)")
  fi
fi
echo "emu-check: $((SECONDS - T0)) s${failures[*]:+; FAILED: ${failures[*]}}"
echo "$passed passed, $failed failed"
((failed == 0))
