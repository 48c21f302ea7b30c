#!/usr/bin/env bash
# GPU machine check: configure + build (Release, sm_90, all cores, Ninja), list the GPUs,
# run the GPU tests (ctest -L gpu, then again with LOCO_VECTOR_KERNELS=1), the CPU unit tests
# on request, scripts/bench-gpu.sh when it exists (side-by-side table, Muon and compression
# lines, step modes host / device / graph, per-op profile), then print a table (step / test
# -> result, seconds). Fits in 9.5 minutes on an H100 node: every step runs under a timeout
# cut from the remaining budget.
#
# Usage: scripts/gpu-check.sh            (from anywhere; builds in <repo>/build-gpu)
# Env:   OUT=dir        also write the logs, summary.txt and bench-results.jsonl there (7 files)
#        BUILD_DIR=dir  build directory (default build-gpu)
#        BUDGET_S=560   total time budget in seconds
#        MODELS=134m,1b the bench's models (side-by-side rows: loco in every step mode and
#                       with the vector kernels, torch eager and torch.compile)
#        VECTOR_CHECK=0 skip the second GPU test pass with LOCO_VECTOR_KERNELS=1
#        TRAIN_STEPS=100 steps of each 134M training run (scripts/gpu-train-check.sh)
# Exit:  0 all passed; 1 configure/build failed; 2 a GPU test failed (or did not run);
#        3 only CPU unit tests or the benchmark failed.
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
ROOT=$(pwd)
BUILD=${BUILD_DIR:-build-gpu}
BUDGET=${BUDGET_S:-560}
JOBS=$(nproc 2>/dev/null || echo 4)
START=$(date +%s)
LOGS=${OUT:-$ROOT/$BUILD/gpu-check-logs}
mkdir -p "$LOGS" "$BUILD"

ROWS=()  # "name|result|seconds"
GPU_FAILED=0
OTHER_FAILED=0

remaining() { echo $((BUDGET - ($(date +%s) - START))); }

# run_step NAME LOG CAP_SECONDS CMD...: runs CMD with output appended to $LOGS/LOG under a
# timeout of min(CAP, remaining budget - 10 s reserve). Sets STEP_RC.
run_step() {
  local name=$1 log=$2 cap=$3
  shift 3
  local left=$(($(remaining) - 10))
  local limit=$((cap < left ? cap : left))
  if ((limit <= 5)); then
    ROWS+=("$name|SKIPPED (no time left)|0")
    STEP_RC=124
    return
  fi
  echo "==> $name (timeout ${limit}s, log $LOGS/$log)"
  local t0
  t0=$(date +%s)
  {
    echo "### $name: $*"
    timeout --kill-after=10 "$limit" "$@"
  } >>"$LOGS/$log" 2>&1
  STEP_RC=$?
  local dt=$(($(date +%s) - t0))
  local result=PASS
  if ((STEP_RC == 124 || STEP_RC == 137)); then
    result="TIMEOUT (${limit}s)"
  elif ((STEP_RC != 0)); then
    result="FAIL (rc $STEP_RC)"
  fi
  ROWS+=("$name|$result|$dt")
  if ((STEP_RC != 0)); then
    echo "---- last lines of $log ----"
    tail -n 60 "$LOGS/$log"
    echo "----"
  fi
}

# Adds one table row per test from a ctest log ("  3/12 Test  #7: name ....   Passed  0.5 sec").
ctest_rows() {
  local log=$1 prefix=$2
  while IFS= read -r line; do
    local name result secs
    name=$(sed -E 's/.*Test +#[0-9]+: ([^ ]+) .*/\1/' <<<"$line")
    secs=$(sed -E 's/.* ([0-9.]+) sec.*/\1/' <<<"$line")
    if grep -q "Passed" <<<"$line"; then result=PASS; else
      result=$(sed -E 's/.*\*+([A-Za-z ]+)\*?.*/\1/; s/ +$//' <<<"$line")
      [[ "$result" == "$line" || -z "$result" ]] && result=FAIL
      result="FAIL ($result)"
    fi
    ROWS+=("  $prefix$name|$result|$secs")
  done < <(grep -E "Test +#[0-9]+: " "$LOGS/$log")
}

: >"$LOGS/build.log"
# ---------------------------------------------------------------- configure + build
CMAKE_EXTRA=()
# CMake < 3.25.2 has no C++20 dialect flag for nvcc (kitware issue 23079): the kernels are
# C++17, so ask for that explicitly there.
CMAKE_VERSION=$(cmake --version | head -n1 | awk '{print $3}')
if [[ "$(printf '%s\n' "$CMAKE_VERSION" 3.25.2 | sort -V | head -n1)" != "3.25.2" ]]; then
  CMAKE_EXTRA+=(-DCMAKE_CUDA_STANDARD=17)
fi
run_step "configure" build.log 120 cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_CUDA_ARCHITECTURES=90 "${CMAKE_EXTRA[@]}"
if ((STEP_RC == 0)); then
  if ! grep -q "CUDA backend ON" "$LOGS/build.log"; then
    echo "WARNING: configure did not enable the CUDA backend (see build.log)"
    ROWS+=("  CUDA backend enabled|FAIL (LOCO_HAVE_CUDA off)|0")
    GPU_FAILED=1
  fi
  # The CLI and the GPU tests (tests/gpu/*.cpp); RUN_UNIT=1 builds everything.
  TARGETS=(loco)
  for src in tests/gpu/gpu_test_*.cpp; do TARGETS+=("$(basename "$src" .cpp)"); done
  [[ "${RUN_UNIT:-0}" == 1 ]] && TARGETS=(all)
  run_step "build (-j$JOBS)" build.log 330 cmake --build "$BUILD" -j "$JOBS" --target "${TARGETS[@]}"
fi
BUILD_RC=$STEP_RC

# ---------------------------------------------------------------- the GPU
run_step "nvidia-smi" nvidia-smi.log 30 bash -c \
  'nvidia-smi -L && nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv'
[[ -s "$LOGS/nvidia-smi.log" ]] && grep -E "^GPU [0-9]+:" "$LOGS/nvidia-smi.log"

if ((BUILD_RC != 0)); then
  GPU_FAILED=1
else
  # ---------------------------------------------------------------- GPU tests
  : >"$LOGS/ctest-gpu.log"
  run_step "ctest -L gpu" ctest-gpu.log 240 ctest --test-dir "$BUILD" -L gpu --output-on-failure -V
  ((STEP_RC != 0)) && GPU_FAILED=1
  ctest_rows ctest-gpu.log ""
  if grep -q "No tests were found" "$LOGS/ctest-gpu.log"; then
    ROWS+=("  (no GPU tests found)|FAIL|0")
    GPU_FAILED=1
  fi
  # -V keeps the output of passing tests in the log, so a self-skipped test is visible.
  if grep -q "SKIP: " "$LOGS/ctest-gpu.log"; then
    echo "WARNING: GPU tests skipped themselves (no usable device?):"
    grep -m1 "SKIP: " "$LOGS/ctest-gpu.log"
    ROWS+=("  GPU tests actually ran|FAIL (skipped: no usable device)|0")
    GPU_FAILED=1
  fi

  # The 16-byte vector paths of the memory-bound kernels are opt-in until they have passed
  # on a GPU (kernels/loco_device.cuh): run the GPU tests once more with them switched on.
  if [[ "${VECTOR_CHECK:-1}" == 1 ]]; then
    : >"$LOGS/ctest-gpu-vector.log"
    run_step "ctest -L gpu, LOCO_VECTOR_KERNELS=1" ctest-gpu-vector.log 120 \
      env LOCO_VECTOR_KERNELS=1 ctest --test-dir "$BUILD" -L gpu --output-on-failure -V
    ((STEP_RC != 0)) && OTHER_FAILED=1
    ctest_rows ctest-gpu-vector.log "vector: "
  fi

  # ---------------------------------------------------------------- CPU unit tests
  # (CI runs them on every submission; here only on request: RUN_UNIT=1.)
  if [[ "${RUN_UNIT:-0}" == 1 ]]; then
  : >"$LOGS/ctest-unit.log"
  run_step "ctest -L unit" ctest-unit.log 120 ctest --test-dir "$BUILD" -L unit --output-on-failure \
    -j "$JOBS"
  ((STEP_RC != 0)) && OTHER_FAILED=1
  UNIT_TOTAL=$(grep -cE "Test +#[0-9]+: " "$LOGS/ctest-unit.log")
  UNIT_FAILED=$(grep -E "Test +#[0-9]+: " "$LOGS/ctest-unit.log" | grep -vc "Passed")
  ROWS+=("  unit tests passed|$((UNIT_TOTAL - UNIT_FAILED))/$UNIT_TOTAL|")
  while IFS= read -r line; do
    ROWS+=("  unit: $(sed -E 's/.*Test +#[0-9]+: ([^ ]+) .*/\1/' <<<"$line")|FAIL|")
  done < <(grep -E "Test +#[0-9]+: " "$LOGS/ctest-unit.log" | grep -v "Passed")
  fi

  # ---------------------------------------------------------------- training through NCCL
  # 134M, ~100 steps: 1 rank with the outer sync over real NCCL; 2 ranks sharing the GPU with
  # outer.transport "mpi" (DiLoCo, SparseLoCo, MuLoCo).
  : >"$LOGS/train.log"
  run_step "gpu-train-check.sh (134M, NCCL / shared GPU)" train.log 150 \
    env BUILD_DIR="$BUILD" bash scripts/gpu-train-check.sh "${TRAIN_STEPS:-100}"
  ((STEP_RC != 0)) && GPU_FAILED=1
  tail -n 6 "$LOGS/train.log"

  # ---------------------------------------------------------------- benchmark
  if [[ -f scripts/bench-gpu.sh ]]; then
    : >"$LOGS/bench.log"
    run_step "bench-gpu.sh" bench.log 300 env BUILD_DIR="$BUILD" MODELS="${MODELS:-134m,1b}" \
      bash scripts/bench-gpu.sh
    ((STEP_RC != 0)) && OTHER_FAILED=1
    echo "---- bench-gpu.sh output (tail) ----"
    tail -n 50 "$LOGS/bench.log"
  else
    ROWS+=("bench-gpu.sh|not present|")
  fi
fi

# ---------------------------------------------------------------- summary table
TOTAL=$(($(date +%s) - START))
{
  echo
  echo "================ gpu-check summary ($(hostname), ${TOTAL}s of ${BUDGET}s) ================"
  grep -m1 -E "^GPU 0:" "$LOGS/nvidia-smi.log" 2>/dev/null || echo "GPU: (nvidia-smi failed)"
  printf '%-44s %-34s %8s\n' "step / test" "result" "seconds"
  printf '%-44s %-34s %8s\n' "--------------------------------------------" \
    "----------------------------------" "--------"
  for row in "${ROWS[@]}"; do
    IFS='|' read -r name result secs <<<"$row"
    printf '%-44s %-34s %8s\n' "$name" "$result" "$secs"
  done
} | tee "$LOGS/summary.txt"

if ((BUILD_RC != 0)); then
  echo "RESULT: configure/build FAILED (exit 1)" | tee -a "$LOGS/summary.txt"
  exit 1
elif ((GPU_FAILED)); then
  echo "RESULT: GPU tests FAILED (exit 2)" | tee -a "$LOGS/summary.txt"
  exit 2
elif ((OTHER_FAILED)); then
  echo "RESULT: GPU tests passed; CPU unit tests or benchmark FAILED (exit 3)" |
    tee -a "$LOGS/summary.txt"
  exit 3
fi
echo "RESULT: all passed" | tee -a "$LOGS/summary.txt"
exit 0
