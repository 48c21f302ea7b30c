#!/usr/bin/env bash
# The GPU tests without a GPU: every CUDA kernel runs in a CPU emulator (tests/emu/), behind
# the real src/cuda/cuda_backend.cpp with host-memory stand-ins for cudart and cuBLASLt.
# Checks indexing, shared memory, barriers, warp collectives and the host-side launch code;
# cannot check GPU float behaviour (flush-to-zero, fast math) or speed — see the comment in
# tests/emu/cuda_emu.hpp. Needs the CUDA toolkit headers (/usr/local/cuda/include).
#
# Usage: scripts/emu-check.sh [test ...]   (default: kernels backend_smoke muon compress step;
#        names are tests/gpu/gpu_test_<name>.cpp). Builds into build-emu/ (BUILD_DIR).
#        EMU_CATCH_ARGS: Catch2 arguments for every binary (default "~[attention-large]": the
#        B=4, T=1024 attention cases take hours as fibers).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)
OUT=${BUILD_DIR:-build-emu}
CUDA_INC=${CUDA_INC:-/usr/local/cuda/include}
TESTS=("$@")
((${#TESTS[@]})) || TESTS=(kernels backend_smoke muon compress step)
JOBS=$(nproc)
[[ -f $CUDA_INC/cuda_runtime_api.h ]] || { echo "no CUDA headers in $CUDA_INC"; exit 1; }
mkdir -p "$OUT"/{k,obj}

# 1. Everything but the backend: a CPU-only loco_core.
cmake -S . -B "$OUT/core" -G Ninja -DCMAKE_BUILD_TYPE=Release -DLOCO_ENABLE_CUDA=OFF >/dev/null
cmake --build "$OUT/core" -j "$JOBS" --target loco_core

# 2. The kernels, rewritten for the emulator, and the host side compiled with CUDA on.
CXX=(g++ -std=c++20 -O2 -g -Wno-deprecated-declarations -I"$CUDA_INC" -I"$ROOT/tests/emu"
     -I"$OUT/k" -I"$ROOT/include")
HOST=(g++ -std=c++20 -O1 -g -fopenmp -DLOCO_HAVE_CUDA=1 -I"$CUDA_INC" -I"$ROOT/include"
      -I"$ROOT/kernels" -I"$ROOT/tests" -I/usr/include/x86_64-linux-gnu/openblas-pthread)
for f in kernels/*.cu kernels/*.cuh; do
  python3 tests/emu/kernel_to_cpp.py "$f" "$OUT/k/$(basename "$f")"
done
compile() {  # compile OUT SRC FLAGS... (skips objects newer than the source and every header)
  local out=$1 src=$2
  shift 2
  if [[ ! -f $out || $src -nt $out ||
        -n $(find include kernels tests/support tests/emu -newer "$out" -print -quit) ]]; then
    echo "  compile $(basename "$src")"
    "$@" -c "$src" -o "$out"
  fi
}
pids=()
for f in "$OUT"/k/*.cu; do
  compile "$OUT/obj/k_$(basename "$f" .cu).o" "$f" "${CXX[@]}" -include cuda_emu.hpp -x c++ &
  pids+=($!)
  if ((${#pids[@]} >= JOBS)); then wait "${pids[0]}"; pids=("${pids[@]:1}"); fi
done
for p in "${pids[@]}"; do wait "$p"; done
compile "$OUT/obj/emu_runtime.o" tests/emu/emu_runtime.cpp "${CXX[@]}"
compile "$OUT/obj/mock.o" tests/emu/mock_cudart_cublaslt.cpp "${CXX[@]}"
compile "$OUT/obj/cuda_backend.o" src/cuda/cuda_backend.cpp "${HOST[@]}"
compile "$OUT/obj/make_backend.o" src/backend/make_backend.cpp "${HOST[@]}"
compile "$OUT/obj/catch_main.o" tests/support/catch_main.cpp "${HOST[@]}"

# 3. Each GPU test against the emulated backend; the CPU build supplies the rest (our
#    make_backend.o comes first, so the CPU-only one in the archive is never pulled in).
LIBS=("$OUT/obj/cuda_backend.o" "$OUT/obj/make_backend.o" "$OUT/obj/catch_main.o"
      "$OUT"/obj/k_*.o "$OUT/obj/emu_runtime.o" "$OUT/obj/mock.o" "$OUT/core/libloco_core.a"
      -lopenblas -fopenmp -lmpi_cxx -lmpi -lspdlog -lfmt)
failed=()
for t in "${TESTS[@]}"; do
  src=tests/gpu/gpu_test_$t.cpp
  [[ -f $src ]] || { echo "no $src"; failed+=("$t (missing)"); continue; }
  compile "$OUT/obj/gpu_test_$t.o" "$src" "${HOST[@]}"
  g++ "$OUT/obj/gpu_test_$t.o" "${LIBS[@]}" -o "$OUT/emu_gpu_test_$t"
  echo "==> emulated gpu_test_$t"
  # shellcheck disable=SC2086
  if ! "$OUT/emu_gpu_test_$t" ${EMU_CATCH_ARGS-"~[attention-large]"}; then failed+=("$t"); fi
done
if ((${#failed[@]})); then
  echo "emu-check: FAILED: ${failed[*]}"
  exit 1
fi
echo "emu-check: all ${#TESTS[@]} emulated GPU test binaries passed"
