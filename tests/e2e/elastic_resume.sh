#!/usr/bin/env bash
# Checkpoints at outer syncs (checkpoint.at_sync) and elastic resume, on one host (mpirun):
#  - exact: a 3-replica run resumed from its step-8 sync checkpoint on 3 replicas logs the same
#    losses, bit for bit, as the uninterrupted run (plain DiLoCo; SparseLoCo, whose error
#    feedback travels in the replica files; Streaming DiLoCo with fragments and overlap, whose
#    local parameters differ from θ_global at a checkpoint and travel too);
#  - elastic: 3 -> 2 -> 3 replicas (LOCO_DATA_TRACE records every window read): no window read
#    twice, none skipped; θ_global loaded = θ_global logged at that sync; the dropped replica
#    is named with its lost error feedback, the one that joins starts fresh (its inner step
#    counter counts only its own steps), the others keep theirs;
#  - bad input, each with a message naming what is wrong, exit 2, nothing in the run directory
#    changed: another replica_size; latest naming a step whose global.bin is missing; a damaged
#    replica file; per-rank checkpoints resumed with at_sync and the reverse; a per-rank
#    checkpoint on another number of ranks; --resume latest with no checkpoint (and
#    --resume auto then starts from step 0);
#  - export-hf reads a sync checkpoint (θ_global in global.bin);
#  - `loco launch` on this host: a killed rank is restarted from the newest checkpoint and the
#    run completes; a hostfile with fewer hosts than --min-nodes is refused (exit 2, nothing
#    started); SIGTERM to the supervisor stops the run at its next sync (exit 143); a host
#    that stops answering while mpirun hangs on it ends the job, which restarts without it.
# Usage: elastic_resume.sh <path to loco> <source dir>
set -euo pipefail
LOCO=$(realpath "$1")
SRC=$(realpath "$2")
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1

T=$(mktemp -d)
SUPERVISOR=""
cleanup() {
  [[ -n $SUPERVISOR ]] && kill -KILL "$SUPERVISOR" 2>/dev/null || true
  rm -rf "$T"
}
trap cleanup EXIT
cd "$T"
MPIRUN=(timeout -k 5 120 mpirun --allow-run-as-root --oversubscribe --bind-to none)
TINY=(--set model.d_model=32 --set model.n_layers=2 --set model.n_heads=2
      --set model.n_kv_heads=1 --set model.d_ff=64 --set model.max_seq_len=32
      --set training.seq_len=32 --set training.micro_batch=2 --set schedule.warmup_steps=1
      --set training.eval_batches=2 --set training.eval_interval=0
      --set distributed.outer.interval=4 --set checkpoint.at_sync=1 --set checkpoint.keep_last=0)
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }

# run <name> <want exit> <ranks> args...: mpirun the trainer, output in $T/<name>.out.
run() {
  local name=$1 want=$2 np=$3 rc=0
  shift 3
  "${MPIRUN[@]}" -np "$np" "$LOCO" train "$@" >"$T/$name.out" 2>&1 || rc=$?
  if [[ $rc -ne $want ]]; then
    fail "$name: exit $rc (want $want)"
    tail -15 "$T/$name.out"
  fi
}
expect_message() { # expect_message <name> <text>
  grep -qF -- "$2" "$T/$1.out" || { fail "$1: no message \"$2\""; tail -8 "$T/$1.out"; }
}
# Everything in a run directory, by content: a refused resume must leave it as it was.
snapshot() { (cd "$1" && find . -type f ! -name .loco.lock -print0 | sort -z | xargs -0 sha256sum); }
unchanged() { # unchanged <name> <run dir> <snapshot file>
  snapshot "$2" | cmp -s - "$3" || fail "$1: the run directory changed"
}
# rewind_to <run dir> <step>: what a kill right after the newest checkpoint at or before
# <step> leaves; prints that checkpoint's step.
rewind_to() {
  local root=$1/checkpoints step="" d
  for d in "$root"/step-*; do
    [[ $(basename "$d") > $(printf 'step-%06d' "$2") ]] && rm -rf "$d" || step=$(basename "$d")
  done
  printf '%s\n' "$step" >"$root/latest"
  echo $((10#${step#step-}))
}
same_losses() { # same_losses <name> <uninterrupted metrics> <resumed metrics> <from> <to>
  python3 - "$@" <<'EOF' || fail "$1: resumed losses differ"
import json, sys
name, a, b, lo, hi = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
def losses(p):
    out = {}
    for line in open(p):
        r = json.loads(line, parse_float=str)
        if "loss" in r:
            out[r["step"]] = (r["loss"], r.get("replicas_mean_loss"))
    return out
la, lb = losses(a), losses(b)
bad = [s for s in range(lo, hi + 1) if la.get(s) is None or la.get(s) != lb.get(s)]
print(f"{name}: steps {lo}..{hi} {'identical' if not bad else 'DIFFER at ' + str(bad)}")
sys.exit(1 if bad else 0)
EOF
}

# ---------------------------------------------------------------- exact resume, same replicas
for variant in diloco sparseloco fragments; do
  case $variant in
    diloco) CFG=(configs/tiny-diloco.json) ;;
    sparseloco) CFG=(configs/tiny-sparseloco.json) ;;
    fragments) CFG=(configs/tiny-diloco.json --set distributed.outer.fragments=2
                    --set distributed.outer.overlap_steps=1) ;;
  esac
  CFG[0]=$SRC/${CFG[0]}
  run "$variant-full" 0 3 "${CFG[@]}" "${TINY[@]}" --set training.steps=16 --out "$T/$variant"
  cp "$T/$variant/metrics.jsonl" "$T/$variant-full.jsonl"
  from=$(rewind_to "$T/$variant" 8)
  run "$variant-resumed" 0 3 "${CFG[@]}" "${TINY[@]}" --set training.steps=16 --out "$T/$variant" \
    --resume latest
  expect_message "$variant-resumed" "(step $from): 3 replica(s) at the checkpoint, 3 now"
  same_losses "$variant" "$T/$variant-full.jsonl" "$T/$variant/metrics.jsonl" $((from + 1)) 16
done
expect_message sparseloco-resumed "continues with its inner optimizer state and error feedback of step 8"
# With fragments and overlap the replicas' parameters differ from θ_global at a checkpoint:
# their replica files carry them.
python3 - "$T/fragments/checkpoints" <<'EOF' || fail "fragments: no local parameters in the replica files"
import glob, json, struct, sys
found = False
for path in glob.glob(sys.argv[1] + "/step-*/replica-*.bin"):
    with open(path, "rb") as f:
        n = struct.unpack_from("<Q", f.read(64), 16)[0]
        doc = json.loads(f.read(n))
    names = [t["name"] for t in doc["tensors"]]
    found |= doc["meta"]["local_params"] and "local.params" in names
sys.exit(0 if found else 1)
EOF

# ---------------------------------------------------------------- elastic 3 -> 2 -> 3
E=$T/elastic
SPARSE=("$SRC/configs/tiny-sparseloco.json" "${TINY[@]}")
LOCO_DATA_TRACE=$T/trace run elastic-3 0 3 "${SPARSE[@]}" --set training.steps=12 --out "$E"
LOCO_DATA_TRACE=$T/trace run elastic-2 0 2 "${SPARSE[@]}" --set training.steps=20 --out "$E" --resume latest
LOCO_DATA_TRACE=$T/trace run elastic-3b 0 3 "${SPARSE[@]}" --set training.steps=28 --out "$E" --resume latest
expect_message elastic-2 "3 replica(s) at the checkpoint, 2 now"
expect_message elastic-2 "of step 12 is not in this run: its inner optimizer state is discarded and its unsent error feedback"
expect_message elastic-3b "new: starts from θ_global with fresh inner optimizer state and zero error feedback"
expect_message elastic-2 "are dealt the rest of the epoch from slot 72"
python3 - "$T" <<'EOF' || fail "elastic: checks failed"
import glob, json, struct, sys
t = sys.argv[1]
ok = True
def bad(msg):
    global ok
    ok = False
    print("FAIL:", msg)
metrics = [json.loads(l) for l in open(f"{t}/elastic/metrics.jsonl")]
steps = {r["step"]: r for r in metrics if "loss" in r}
resumes = [r for r in metrics if "resume" in r]
for r in resumes:
    e = r["resume"]["elastic"]
    logged = steps[r["step"]]["outer"]["global_fingerprint"]
    print(f"resume at {r['step']}: {e['replicas_before']} -> {e['replicas_now']}, kept {e['kept']}, "
          f"new {e['new']}, dropped {e['dropped']}; θ_global {e['global_fingerprint']} (logged {logged})")
    if logged != e["global_fingerprint"]:
        bad(f"θ_global loaded at step {r['step']} differs from the one logged there")
a, b = resumes[0]["resume"]["elastic"], resumes[1]["resume"]["elastic"]
if (len(a["kept"]), len(a["dropped"]), len(b["kept"]), len(b["new"])) != (2, 1, 2, 1):
    bad(f"replicas: {a} then {b}")
# Windows: 12 steps x 3 replicas x 2, 8 x 2 x 2, 8 x 3 x 2 = slots 0..151 of epoch 0, each once.
rows = [tuple(map(int, l.split())) for f in glob.glob(f"{t}/trace/*.txt") for l in open(f)]
slots = sorted((e, s) for _, e, s, _, _, _ in rows)
if slots != [(0, i) for i in range(152)]:
    bad(f"windows read: {len(slots)}, distinct {len(set(slots))}; want slots 0..151 once each")
else:
    print("elastic: windows 0..151 each read once")
# The replica that joined at step 20 counts only its own 8 steps; the others all 28.
def meta(path):
    with open(path, "rb") as f:
        n = struct.unpack_from("<Q", f.read(64), 16)[0]
        return json.loads(f.read(n))["meta"]
counts = {}
for p in glob.glob(f"{t}/elastic/checkpoints/step-000028/replica-*.bin"):
    m = meta(p)
    counts[m["key"]] = m["optimizer_steps_taken"]
print("inner steps taken at step 28:", counts)
new = b["new"][0]
if counts.get(new) != 8 or sorted(v for k, v in counts.items() if k != new) != [28, 28]:
    bad(f"inner step counters {counts}: want 8 for the new replica {new}, 28 for the others")
sys.exit(0 if ok else 1)
EOF
# export-hf and eval read θ_global from a sync checkpoint.
"$LOCO" export-hf "$E" "$T/hf" >"$T/export.out" 2>&1 || fail "export-hf of a sync checkpoint: $(tail -2 "$T/export.out")"
[[ -f $T/hf/model.safetensors ]] || fail "export-hf wrote no model.safetensors"

# ---------------------------------------------------------------- bad input: nothing changes
snapshot "$E" >"$T/elastic.snap"
# Another replica size.
run bad-replica-size 2 2 "${SPARSE[@]}" --set distributed.replica_size=2 --set training.steps=40 \
  --out "$E" --resume latest
expect_message bad-replica-size "was written by replicas of 1 rank(s) (distributed.replica_size), this run's have 2"
unchanged bad-replica-size "$E" "$T/elastic.snap"
# latest names a step whose global.bin is gone.
mv "$E/checkpoints/step-000028/global.bin" "$T/global.bin.saved"
snapshot "$E" >"$T/elastic-nog.snap"
run missing-global 2 3 "${SPARSE[@]}" --set training.steps=40 --out "$E" --resume latest
expect_message missing-global "latest names step-000028, but $E/checkpoints/step-000028/global.bin is missing"
expect_message missing-global "cannot resume: node $(hostname)"
unchanged missing-global "$E" "$T/elastic-nog.snap"
mv "$T/global.bin.saved" "$E/checkpoints/step-000028/global.bin"
# A damaged replica file.
R0=$(ls "$E"/checkpoints/step-000028/replica-*.bin | head -n 1)
cp "$R0" "$T/replica.saved"
printf 'x' | dd of="$R0" bs=1 seek=200 conv=notrunc 2>/dev/null
snapshot "$E" >"$T/elastic-bad.snap"
run damaged-replica 2 3 "${SPARSE[@]}" --set training.steps=40 --out "$E" --resume latest
expect_message damaged-replica "$R0"
expect_message damaged-replica "checksum mismatch"
unchanged damaged-replica "$E" "$T/elastic-bad.snap"
cp "$T/replica.saved" "$R0"
# A sync checkpoint resumed as per-rank files, and the reverse.
run sync-as-per-rank 2 3 "${SPARSE[@]}" --set checkpoint.at_sync=0 --set checkpoint.interval=4 \
  --set training.steps=40 --out "$E" --resume latest
expect_message sync-as-per-rank "holds a checkpoint written at an outer sync (global.bin"
unchanged sync-as-per-rank "$E" "$T/elastic.snap"
P=$T/per-rank
run per-rank 0 3 "${SPARSE[@]}" --set checkpoint.at_sync=0 --set checkpoint.interval=4 \
  --set training.steps=8 --out "$P"
snapshot "$P" >"$T/per-rank.snap"
run per-rank-as-sync 2 3 "${SPARSE[@]}" --set training.steps=12 --out "$P" --resume latest
expect_message per-rank-as-sync "holds per-rank checkpoints (rank-<r>.bin, written with checkpoint.interval)"
run per-rank-fewer 2 2 "${SPARSE[@]}" --set checkpoint.at_sync=0 --set checkpoint.interval=4 \
  --set training.steps=12 --out "$P" --resume latest
expect_message per-rank-fewer "written by 3 rank(s), this run has 2"
expect_message per-rank-fewer "write checkpoints at outer syncs (checkpoint.at_sync)"
unchanged per-rank "$P" "$T/per-rank.snap"
# No checkpoint anywhere: "latest" is an error naming where it looked; "auto" starts at 0.
run no-checkpoint 2 2 "${SPARSE[@]}" --set training.steps=8 --out "$T/empty" --resume latest
expect_message no-checkpoint "no node holds a checkpoint to resume from (looked for $T/empty/checkpoints/latest on node $(hostname))"
[[ ! -e $T/empty ]] || fail "no-checkpoint: the refused run left $T/empty behind"
run auto-fresh 0 2 "${SPARSE[@]}" --set training.steps=8 --out "$T/auto" --resume auto
expect_message auto-fresh "no checkpoint on any node; starting from step 0"

# ---------------------------------------------------------------- loco launch on this host
echo "$(hostname) slots=3" >"$T/hosts"
rc=0
"$LOCO" launch --hostfile "$T/hosts" --min-nodes 2 -r 3 -- "$LOCO" train "${SPARSE[@]}" \
  --out "$T/never" >"$T/launch-min.out" 2>&1 || rc=$?
[[ $rc -eq 2 ]] || fail "launch with too few hosts: exit $rc (want 2)"
grep -qF "lists 1 host(s) ($(hostname)), fewer than --min-nodes 2" "$T/launch-min.out" ||
  { fail "launch with too few hosts: no clear message"; cat "$T/launch-min.out"; }
[[ ! -e $T/never ]] || fail "launch with too few hosts started something"

# A rank killed mid-run: the supervisor restarts from the newest checkpoint; the run ends.
L=$T/launched
"$LOCO" launch --hostfile "$T/hosts" -r 3 --backoff 0.2 --events "$T/events.jsonl" \
  --mpirun-arg=--bind-to --mpirun-arg=none -- \
  "$LOCO" train "${SPARSE[@]}" --set training.steps=3000 --set training.log_interval=100000 \
  --out "$L" >"$T/launch.out" 2>&1 &
SUPERVISOR=$!
killed=""
for _ in $(seq 600); do
  if [[ -f $L/metrics.jsonl ]] && [[ $(grep -c '"loss"' "$L/metrics.jsonl" || true) -ge 40 ]]; then
    # The supervisor's child is mpirun; mpirun's children are the ranks.
    victim=$(pgrep -P "$(pgrep -P "$SUPERVISOR" | head -n 1)" | tail -n 1 || true)
    [[ -n $victim ]] && kill -KILL "$victim" && killed=$victim && break
  fi
  sleep 0.1
done
[[ -n $killed ]] || fail "launch: could not kill a rank"
rc=0
timeout 300 tail --pid="$SUPERVISOR" -f /dev/null || true
wait "$SUPERVISOR" || rc=$?
SUPERVISOR=""
[[ $rc -eq 0 ]] || { fail "launch: supervisor exit $rc"; tail -20 "$T/launch.out"; }
python3 - "$T/events.jsonl" "$L" <<'EOF' || fail "launch: events or run wrong"
import json, sys
events = [json.loads(l) for l in open(sys.argv[1])]
kinds = [e["event"] for e in events]
summary = json.load(open(sys.argv[2] + "/summary.json"))
resumes = [json.loads(l) for l in open(sys.argv[2] + "/metrics.jsonl") if '"resume"' in l]
print("launch: events", kinds, "| steps", summary["steps"], "| resumed at", [r["step"] for r in resumes])
ok = kinds.count("launch") == 2 and "restart" in kinds and kinds[-1] == "done"
ok &= summary["steps"] == 3000 and len(resumes) == 1 and resumes[0]["step"] > 0
sys.exit(0 if ok else 1)
EOF

# SIGTERM to the supervisor: the run stops at its next sync with a checkpoint, no restart.
S=$T/stopped
"$LOCO" launch --hostfile "$T/hosts" -r 3 --mpirun-arg=--bind-to --mpirun-arg=none -- \
  "$LOCO" train "${SPARSE[@]}" --set training.steps=100000 --set training.log_interval=100000 \
  --out "$S" >"$T/launch-stop.out" 2>&1 &
SUPERVISOR=$!
for _ in $(seq 600); do
  [[ -f $S/metrics.jsonl ]] && [[ $(grep -c '"loss"' "$S/metrics.jsonl" || true) -ge 20 ]] && break
  sleep 0.1
done
kill -TERM "$SUPERVISOR"
rc=0
wait "$SUPERVISOR" || rc=$?
SUPERVISOR=""
[[ $rc -eq 143 ]] || { fail "launch stop: exit $rc (want 143)"; tail -10 "$T/launch-stop.out"; }
python3 - "$S" <<'EOF' || fail "launch stop: no checkpoint at the stop"
import json, sys
s = json.load(open(sys.argv[1] + "/summary.json"))
latest = open(sys.argv[1] + "/checkpoints/latest").read().strip()
print("launch stop: stopped_early", s["stopped_early"], "at step", s["steps"], "| latest", latest)
sys.exit(0 if s["stopped_early"] and latest == "step-%06d" % s["steps"] and s["steps"] % 4 == 0 else 1)
EOF

# A host that vanishes while mpirun keeps waiting on it (here: a stand-in mpirun that ignores
# SIGTERM): the supervisor's probes (--watch-interval) find it silent, end the job (SIGTERM,
# then SIGKILL 5 s later) and restart on the host that is left.
cat >"$T/agent" <<AGENT
#!/bin/sh
if [ "\$1" = hostb ] && [ -e "$T/hostb-down" ]; then
  echo "ssh: connect to host hostb port 22: No route to host" >&2
  exit 255
fi
exit 0
AGENT
cat >"$T/stuck-mpirun" <<STUCK
#!/bin/sh
if [ ! -e "$T/hostb-down" ]; then
  touch "$T/hostb-down"
  trap '' TERM
  exec sleep 60
fi
exit 0
STUCK
chmod +x "$T/agent" "$T/stuck-mpirun"
printf 'hosta\nhostb\n' >"$T/two-hosts"
rc=0
timeout 60 "$LOCO" launch --hostfile "$T/two-hosts" --agent "$T/agent" \
  --mpirun "$T/stuck-mpirun" --watch-interval 0.2 --backoff 0.1 \
  --events "$T/watch-events.jsonl" -- true >"$T/launch-watch.out" 2>&1 || rc=$?
[[ $rc -eq 0 ]] || { fail "launch watch: exit $rc (want 0)"; tail -10 "$T/launch-watch.out"; }
grep -qF "host hostb of launch 1 stopped answering" "$T/launch-watch.out" ||
  { fail "launch watch: no message naming the silent host"; cat "$T/launch-watch.out"; }
python3 - "$T/watch-events.jsonl" <<'EOF' || fail "launch watch: events wrong"
import json, sys
events = [json.loads(l) for l in open(sys.argv[1])]
kinds = [e["event"] for e in events]
hosts = [e["hosts"] for e in events if e["event"] == "launch"]
exits = [e["code"] for e in events if e["event"] == "exit"]
print("launch watch: events", kinds, "| hosts", hosts, "| exits", exits)
ok = hosts == [["hosta", "hostb"], ["hosta"]] and "host_lost" in kinds and kinds[-1] == "done"
ok &= exits == [137, 0]  # SIGTERM ignored: SIGKILL after the grace
sys.exit(0 if ok else 1)
EOF

if [[ $fails -ne 0 ]]; then
  echo "$fails failure(s)"
  exit 1
fi
echo "elastic resume ok"
