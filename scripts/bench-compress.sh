#!/usr/bin/env bash
# Compression benchmark (CPU): bits per kept element on the wire vs the naive 12-bit index and
# the information limit, and encode / decode throughput in MB/s of fp32 input, for a
# 4096×4096 pseudo-gradient (iid normal) through the whole send side (error feedback →
# selector → quantiser → packing) and the receive side (validated decode into a dense buffer).
# Runs the hidden "[.bench]" case of tests/test_compress.cpp.
#
#   scripts/bench-compress.sh                 # builds into $BUILD_DIR (default: build)
#   BUILD_DIR=build-x OMP_NUM_THREADS=1 scripts/bench-compress.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
if [[ ! -f "$BUILD_DIR/build.ninja" && ! -f "$BUILD_DIR/Makefile" ]]; then
  cmake --preset cpu-only -B "$BUILD_DIR" >/dev/null
fi
cmake --build "$BUILD_DIR" --target test_compress >/dev/null
echo "machine: $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc --all) cores, OMP_NUM_THREADS=${OMP_NUM_THREADS:-unset}"
echo "date:    $(date -u +%Y-%m-%dT%H:%MZ)"
echo "load:    $(cut -d' ' -f1-3 /proc/loadavg)"
"$BUILD_DIR/tests/test_compress" "[.bench]" | sed -n '/^input:/,/^information limit k=128/p'
