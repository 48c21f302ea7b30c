#!/usr/bin/env bash
# Builds the libFuzzer harnesses (fuzz/*.cpp) with clang + ASan + UBSan into build-fuzz/ and
# runs each for a bounded time:
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (default 60 s, every target)
#
# Corpora live in build-fuzz/corpus/<target>/ (seeded by loco_fuzz_seeds, grown by each run,
# kept between runs); crashes, leaks, timeouts and out-of-memory inputs go to
# build-fuzz/findings/<target>/ and make the script exit non-zero. Logs: build-fuzz/logs/.
# Replay one input: build-fuzz/fuzz/fuzz_<target> FILE. A one-minute smoke run:
# scripts/fuzz.sh 8. Not part of ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-60}"
shift || true

packages=(clang libclang-rt-14-dev libomp-14-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=""
  [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  echo "fuzz: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
scripts/install-deps.sh >/dev/null

B=build-fuzz
cmake --preset fuzz -B "$B" >/dev/null  # CMakePresets.json
cmake --build "$B" -j "$(nproc)" --target loco_fuzzers
mkdir -p "$B/corpus" "$B/findings" "$B/logs"
"$B/fuzz/loco_fuzz_seeds" "$B/seeds" >/dev/null

targets=("$@")
if ((${#targets[@]} == 0)); then
  for f in "$B"/fuzz/fuzz_*; do
    [[ -x "$f" ]] && targets+=("$(basename "$f" | sed 's/^fuzz_//')")
  done
fi

export ASAN_OPTIONS="abort_on_error=1:detect_leaks=1:allocator_may_return_null=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export OMP_NUM_THREADS=1
status=0
printf '%-12s %12s %8s %8s %s\n' target executions exec/s corpus findings
for t in "${targets[@]}"; do
  exe="$B/fuzz/fuzz_$t"
  [[ -x "$exe" ]] || { echo "fuzz: no harness fuzz_$t" >&2; exit 2; }
  mkdir -p "$B/corpus/$t" "$B/findings/$t"
  before=$(find "$B/findings/$t" -type f | wc -l)
  set +e
  "$exe" "$B/corpus/$t" "$B/seeds/$t" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
    -malloc_limit_mb=1024 -max_len=65536 -print_final_stats=1 -close_fd_mask=1 \
    -artifact_prefix="$B/findings/$t/" >"$B/logs/$t.log" 2>&1
  rc=$?
  set -e
  after=$(find "$B/findings/$t" -type f | wc -l)
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$B/logs/$t.log" | grep -o '[0-9]*$' || echo "?")
  speed=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$B/logs/$t.log" | grep -o '[0-9]*$' || echo "?")
  corpus=$(find "$B/corpus/$t" -type f | wc -l)
  printf '%-12s %12s %8s %8s %s\n' "$t" "$execs" "$speed" "$corpus" "$((after - before)) new (rc $rc)"
  if ((rc != 0 || after > before)); then
    status=1
    echo "fuzz: $t found a problem; see $B/logs/$t.log and $B/findings/$t/" >&2
  fi
done
exit $status
