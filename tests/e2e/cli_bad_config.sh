#!/usr/bin/env bash
# A bad config makes `loco train` exit non-zero before it touches the filesystem: the error
# on stderr names the JSON path (and value) at fault, and the --out directory is not created.
# Also once under `mpirun -np 2`: one message (from the lowest failing rank), non-zero exit.
# Usage: cli_bad_config.sh <path to loco> <source dir>
set -euo pipefail
LOCO=$(realpath "$1")
SRC=$2
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
MPIRUN=(timeout -k 5 40 mpirun --allow-run-as-root --oversubscribe --bind-to none)

T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
cd "$T"
CONFIG=$SRC/configs/tiny-ddp.json
fails=0
n=0

# expect_bad "<substring of stderr>"... -- <loco train args>
expect_bad() {
  local expected=()
  while [[ $1 != -- ]]; do expected+=("$1"); shift; done
  shift
  n=$((n + 1))
  local out=$T/out-$n rc=0
  timeout 30 "$LOCO" train "$@" --out "$out" >"$T/stdout" 2>"$T/stderr" || rc=$?
  local what="case $n (loco train $*)"
  if [[ $rc -eq 0 ]]; then
    echo "FAIL $what: exit 0"; fails=$((fails + 1))
  elif [[ $rc -ge 124 ]]; then
    echo "FAIL $what: exit $rc (timeout, crash or signal)"; fails=$((fails + 1))
  fi
  for e in "${expected[@]}"; do
    if ! grep -qF -- "$e" "$T/stderr"; then
      echo "FAIL $what: stderr does not contain: $e"; fails=$((fails + 1))
    fi
  done
  if [[ -e $out ]]; then
    echo "FAIL $what: created $out"; fails=$((fails + 1))
  fi
  echo "case $n rc=$rc: $(head -c 300 "$T/stderr" | head -n 1)"
}

# Unknown keys: through --set and in the file itself (with a suggestion).
expect_bad 'unknown key "model.bogus"' -- "$CONFIG" --set model.bogus=1
printf '{"name": "x", "modle": {"d_model": 32}}\n' >"$T/unknown.json"
expect_bad "$T/unknown.json" 'unknown key "modle"' 'did you mean "model"' -- "$T/unknown.json"
# Wrong types.
expect_bad "$CONFIG" 'model.d_model' 'expected an integer' '"abc"' -- "$CONFIG" --set 'model.d_model="abc"'
printf '{"training": {"steps": "ten"}}\n' >"$T/type.json"
expect_bad "$T/type.json" 'training.steps' '"ten"' -- "$T/type.json"
expect_bad 'distributed.outer.nesterov' 'expected a boolean' -- "$SRC/configs/tiny-diloco.json" --set distributed.outer.nesterov=1
# Cross-key and range rules.
expect_bad 'model.n_kv_heads = 3' 'must divide model.n_heads = 4' -- "$CONFIG" --set model.n_kv_heads=3
expect_bad 'optimizer.lr = 0' -- "$CONFIG" --set optimizer.lr=0
expect_bad 'optimizer.lr = -0.5' -- "$CONFIG" --set optimizer.lr=-0.5
expect_bad 'training.seq_len = 512' 'model.max_seq_len = 256' -- "$CONFIG" --set training.seq_len=512
expect_bad 'distributed.method' '"allreduce"' -- "$CONFIG" --set distributed.method=allreduce
expect_bad 'distributed.outer.momentum = 1' -- "$SRC/configs/tiny-diloco.json" --set distributed.outer.momentum=1
# Overlapped outer syncs (Streaming DiLoCo): τ < H, α in [0, 1].
expect_bad 'distributed.outer.overlap_steps = 20' 'must be < distributed.outer.interval = 20' -- "$SRC/configs/tiny-diloco.json" --set distributed.outer.overlap_steps=20
expect_bad 'distributed.outer.overlap_steps = -1' 'must be >= 0' -- "$SRC/configs/tiny-diloco.json" --set distributed.outer.overlap_steps=-1
expect_bad 'distributed.outer.merge_alpha = 2' 'must be in [0, 1]' -- "$SRC/configs/tiny-diloco.json" --set distributed.outer.merge_alpha=2
# Streaming DiLoCo fragments: p <= n_layers (4), p divides H (20), τ < H/p.
expect_bad 'distributed.outer.fragments = 5' 'must be <= model.n_layers = 4' -- "$SRC/configs/tiny-diloco.json" --set distributed.outer.fragments=5
expect_bad 'distributed.outer.fragments = 3' 'must divide distributed.outer.interval = 20' -- "$SRC/configs/tiny-diloco.json" --set distributed.outer.fragments=3
expect_bad 'distributed.outer.fragments = 0' 'must be >= 1' -- "$SRC/configs/tiny-diloco.json" --set distributed.outer.fragments=0
expect_bad 'distributed.outer.overlap_steps = 5' 'must be < distributed.outer.interval / distributed.outer.fragments = 5' -- "$SRC/configs/tiny-streaming.json" --set distributed.outer.fragments=4
# Simulated slow link: values >= 0 and finite; DDP has no outer-sync group to slow down.
expect_bad 'distributed.link.bandwidth_mbps = -5' 'must be >= 0' -- "$SRC/configs/tiny-diloco.json" --set distributed.link.bandwidth_mbps=-5
expect_bad 'distributed.link.latency_ms = -1' 'must be >= 0' -- "$SRC/configs/tiny-diloco.json" --set distributed.link.latency_ms=-1
expect_bad 'distributed.link.latency_ms' 'expected a number' -- "$SRC/configs/tiny-diloco.json" --set distributed.link.latency_ms=nan
expect_bad 'distributed.link.bandwidth_mbps' 'expected a number' -- "$SRC/configs/tiny-diloco.json" --set distributed.link.bandwidth_mbps=1e999
expect_bad 'distributed.link.bandwidth_mbps = 100' 'method "ddp" has no outer sync' -- "$CONFIG" --set distributed.link.bandwidth_mbps=100
# Missing data file.
expect_bad 'data.train = "'"$T"'/nope.bin"' 'matches no file' -- "$CONFIG" --set "data.train=$T/nope.bin"
# Malformed JSON: file, line and column.
printf '{\n  "name": "x",\n  "model": {"d_model": 32,}\n}\n' >"$T/malformed.json"
expect_bad "$T/malformed.json:3:" 'invalid JSON' -- "$T/malformed.json"
# A key given twice (nlohmann alone would keep the last value silently).
printf '{"optimizer": {"lr": 0.1, "eps": 1e-8, "lr": 0.2}}\n' >"$T/twice.json"
expect_bad "$T/twice.json" 'duplicate key "optimizer.lr"' -- "$T/twice.json"
# model.init_from that does not exist (not silently random weights).
expect_bad 'model.init_from = "/nonexistent/model"' 'no such file or directory' -- "$CONFIG" --set model.init_from=/nonexistent/model
# Sizes beyond the machine: refused before allocating, naming the keys and the bytes.
expect_bad 'training.micro_batch = 100000000 × training.seq_len = 128' 'tokens per forward pass' \
  -- "$CONFIG" --set training.micro_batch=1e8
expect_bad 'this run needs about' 'TiB of host memory' 'activations' 'training.micro_batch = 1000000' \
  'lower training.micro_batch' -- "$CONFIG" --set training.micro_batch=1000000
expect_bad 'this run needs about' 'parameters, gradients and optimizer state' 'model.d_model = 1048576' \
  -- "$CONFIG" --set model.d_model=1048576 --set model.n_heads=2 --set model.n_kv_heads=1
# Bad --set syntax.
expect_bad '--set training.steps' 'expected KEY=VALUE' -- "$CONFIG" --set training.steps
expect_bad 'malformed key "training..steps"' -- "$CONFIG" --set training..steps=3
expect_bad '"training.steps.x"' -- "$CONFIG" --set training.steps.x=3

# The same under mpirun -np 2: exactly one error line, non-zero exit, no directory.
# (And one that depends on the world size: replica_size 3 cannot divide 2 ranks.)
for args in "--set optimizer.lr=0" "--set distributed.replica_size=3"; do
  n=$((n + 1))
  out=$T/out-$n
  cfg=$SRC/configs/tiny-diloco.json
  rc=0
  # shellcheck disable=SC2086
  "${MPIRUN[@]}" -np 2 "$LOCO" train "$cfg" $args --out "$out" >"$T/stdout" 2>"$T/stderr" || rc=$?
  what="mpirun -np 2 case ($args)"
  if [[ $rc -eq 0 || $rc -ge 124 ]]; then
    echo "FAIL $what: exit $rc"; fails=$((fails + 1))
  fi
  lines=$(grep -c '^error: ' "$T/stderr" || true)
  if [[ $lines -ne 1 ]]; then
    echo "FAIL $what: $lines error lines (want 1):"; cat "$T/stderr"; fails=$((fails + 1))
  fi
  key=${args#--set }
  key=${key%%=*}
  if ! grep -qF "$key = " "$T/stderr"; then
    echo "FAIL $what: stderr does not name $key"; cat "$T/stderr"; fails=$((fails + 1))
  fi
  if grep -q MPI_ABORT "$T/stderr"; then
    echo "FAIL $what: ranks were aborted instead of exiting together"; fails=$((fails + 1))
  fi
  if [[ -e $out ]]; then
    echo "FAIL $what: created $out"; fails=$((fails + 1))
  fi
  echo "$what rc=$rc: $(grep '^error: ' "$T/stderr" | head -n 1)"
done

if [[ $fails -ne 0 ]]; then
  echo "$fails failure(s)"
  exit 1
fi
echo "all $n bad-config cases rejected"
