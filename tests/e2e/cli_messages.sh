#!/usr/bin/env bash
# Failures are loud and say what is wrong:
#  - an unknown subcommand is named as such (exit 2);
#  - eval / export-hf of a directory that is neither an HF directory nor a checkpoint says so
#    and what each needs;
#  - --resume of a file that is not a checkpoint names that file, not rank-0.bin;
#  - ranks that disagree on the config are told which keys differ, with both values;
#  - a metrics.jsonl write error (a full disk, injected) stops the run at once, naming the
#    file, and leaves no torn line;
#  - `loco tokenize` refuses outputs that are its input or each other (also through links)
#    and inputs that are not regular files (/dev/zero would never end).
# Usage: cli_messages.sh <path to loco> <source dir>
set -euo pipefail
LOCO=$(realpath "$1")
SRC=$2
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
cd "$T"
CONFIG=$SRC/configs/tiny.json
TINY=(--set model.d_model=32 --set model.n_layers=2 --set model.n_heads=2
      --set model.n_kv_heads=1 --set model.d_ff=64 --set model.max_seq_len=32
      --set training.seq_len=32 --set training.micro_batch=2 --set schedule.warmup_steps=1
      --set training.eval_batches=2 --set training.eval_interval=0)
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
# expect NAME RC "substring"... -- command...: the exit code and the messages.
expect() {
  local name=$1 want=$2
  shift 2
  local expected=()
  while [[ $1 != -- ]]; do expected+=("$1"); shift; done
  shift
  local rc=0
  timeout 60 "$@" >"$T/$name.out" 2>&1 || rc=$?
  [[ $rc -eq $want ]] || fail "$name: exit $rc (want $want)"
  for e in "${expected[@]}"; do
    grep -qF -- "$e" "$T/$name.out" || { fail "$name: output lacks: $e"; cat "$T/$name.out"; }
  done
  echo "$name rc=$rc: $(head -n 1 "$T/$name.out" | head -c 300)"
}

# ---------------------------------------------------------------- subcommands
expect unknown 2 'unknown subcommand "frobnicate"' 'train' 'tokenize' -- "$LOCO" frobnicate
expect bad-option 2 -- "$LOCO" train "$CONFIG" --no-such-option

# ---------------------------------------------------------------- eval / export-hf sources
mkdir -p "$T/empty" "$T/config-only"
echo '{}' >"$T/config-only/config.json"
printf 'a few words of text to evaluate on\n' >"$T/t.txt"
for cmd in eval export-hf; do
  args=(--text "$T/t.txt")
  [[ $cmd == export-hf ]] && args=("$T/exported")
  expect "$cmd-empty" 2 "$T/empty is neither a Hugging Face directory" \
    'needs config.json and model.safetensors' 'nor a loco checkpoint' 'it holds none of these' \
    -- "$LOCO" "$cmd" "$T/empty" "${args[@]}"
  expect "$cmd-config-only" 2 "is neither a Hugging Face directory" 'it holds config.json' \
    -- "$LOCO" "$cmd" "$T/config-only" "${args[@]}"
done

# ---------------------------------------------------------------- --resume of a non-checkpoint
echo '{}' >"$T/small.json"
expect resume-json 2 "cannot resume from $T/small.json: not a checkpoint" -- \
  "$LOCO" train "$CONFIG" "${TINY[@]}" --set training.steps=2 --out "$T/r" --resume "$T/small.json"
grep -q "rank-0.bin" "$T/resume-json.out" && grep -q "no such\|cannot read" "$T/resume-json.out" &&
  fail "resume-json still blames rank-0.bin"
[[ ! -e $T/r ]] || fail "a refused --resume created $T/r"

# ---------------------------------------------------------------- ranks disagree on keys
cat >"$T/rank-steps.sh" <<'SH'
#!/usr/bin/env bash
# Rank 1 runs 7 steps and another lr; the others 6.
if [[ $OMPI_COMM_WORLD_RANK == 1 ]]; then exec "$@" --set training.steps=7 --set optimizer.lr=0.002; fi
exec "$@" --set training.steps=6
SH
chmod +x "$T/rank-steps.sh"
expect disagree 2 'ranks disagree on the resolved config: rank(s) 1 differ from rank 0' \
  'training.steps (7 on rank 1, 6 on rank 0)' 'optimizer.lr (0.002 on rank 1, 0.003 on rank 0)' -- \
  timeout -k 5 60 mpirun --allow-run-as-root --oversubscribe --bind-to none -np 2 \
  "$T/rank-steps.sh" "$LOCO" train "$SRC/configs/tiny-ddp.json" "${TINY[@]}" --out "$T/dis"

# ---------------------------------------------------------------- metrics.jsonl write error
# A full disk after ~1.5 kB of metrics (LOCO_FAULT_INJECT_WRITE fails every write past that
# byte, as ENOSPC would): the run stops at once naming the file; every line left is a record.
rc=0
LOCO_FAULT_INJECT_WRITE=1500 timeout 60 "$LOCO" train "$CONFIG" "${TINY[@]}" \
  --set training.steps=200 --set checkpoint.interval=0 --out "$T/full" >"$T/full.out" 2>&1 || rc=$?
[[ $rc -ne 0 ]] || fail "a metrics write error: exit 0"
grep -q "error: cannot write $T/full/metrics.jsonl: injected write failure" "$T/full.out" ||
  { fail "the metrics error does not name the file"; tail -3 "$T/full.out"; }
python3 - "$T/full/metrics.jsonl" <<'PY' || fail "metrics.jsonl after a write error"
import json, sys
text = open(sys.argv[1]).read()
assert text.endswith("\n"), "torn last line: %r" % text[-40:]
steps = [json.loads(l)["step"] for l in text.splitlines()]
assert 0 < len(steps) < 200 and steps == list(range(1, len(steps) + 1)), steps
print("metrics stopped after step", steps[-1], "of 200")
PY

# ---------------------------------------------------------------- tokenize
printf 'line one\nline two\nline three\nline four\n' >"$T/in.txt"
cp "$T/in.txt" "$T/in.orig"
ln -s "$T/in.txt" "$T/link.txt"
ln "$T/in.txt" "$T/hard.txt"
mkdir -p "$T/sub"
expect tok-self 2 "--train $T/in.txt is the input file" -- "$LOCO" tokenize "$T/in.txt" --train "$T/in.txt"
expect tok-symlink 2 "is the input file" -- "$LOCO" tokenize "$T/in.txt" --train "$T/link.txt"
expect tok-hardlink 2 "is the input file" -- "$LOCO" tokenize "$T/in.txt" --train "$T/hard.txt"
expect tok-dots 2 "is the input file" -- "$LOCO" tokenize "$T/in.txt" --train "$T/sub/../in.txt"
expect tok-val-self 2 "--val $T/in.txt is the input file" -- \
  "$LOCO" tokenize "$T/in.txt" --train "$T/a.bin" --val "$T/in.txt" --val-fraction 0.25
expect tok-same 2 "--train $T/a.bin and --val $T/sub/../a.bin are the same file" -- \
  "$LOCO" tokenize "$T/in.txt" --train "$T/a.bin" --val "$T/sub/../a.bin" --val-fraction 0.25
cmp -s "$T/in.txt" "$T/in.orig" || fail "tokenize overwrote its input"
[[ ! -e $T/a.bin ]] || fail "a refused tokenize wrote $T/a.bin"
expect tok-dev-zero 2 "/dev/zero: not a regular file" -- "$LOCO" tokenize /dev/zero --train "$T/z.bin"
expect tok-ok 0 "tokenized" -- "$LOCO" tokenize "$T/in.txt" --train "$T/a.bin" --val "$T/b.bin" --val-fraction 0.25

if [[ $fails -ne 0 ]]; then
  echo "$fails failure(s)"
  exit 1
fi
echo "cli_messages: all checks passed"
