#!/usr/bin/env bash
# Elastic DiLoCo on the emulated cluster (scripts/netns-cluster.sh --launcher): a run under
# `loco launch` survives a node that fails and comes back.
#
#  3 nodes (1 rank each, one DiLoCo replica per node), checkpoints at every outer sync on each
#  node's own disk (checkpoint.storage = node_local, --node-disk). Mid-run node 1 vanishes
#  (nodectl down: its link goes down, then every process in it is killed): the supervisor's
#  probes during the job find it silent, it ends the job and restarts on nodes 0 and 2 from
#  the newest checkpoint; later node 1 comes back (nodectl up) and SIGUSR1 to the
#  supervisor rescales the run to 3 nodes at the next outer sync. Checked:
#   - the supervisor's launches ran on 3, 2, 3 nodes and it exited 0; the run reached
#     training.steps with finite numbers;
#   - θ after every sync: every rank agreed (the run checks it at every sync point), the
#     θ_global each restart loaded is the one logged at its step before the failure, and
#     every node's global.bin of a step holds the same θ_global;
#   - data: over the steps that count (those up to the step each restart resumed from), no
#     window was read twice and none skipped: the slots read are exactly 0 .. G-1;
#   - steps lost to the failure <= H (outer.interval); none to the rescale;
#   - the replicas' fate: the failed node's replica dropped (2 after the failure), back as a
#     new replica (fresh inner state) after the rescale, the others kept theirs.
# Prints the recovery time (failure -> first training step after the restart) and the steps
# lost; docs/reliability.md reports them. Needs root: otherwise exits 77 (skipped).
# Usage: elastic.sh <path to loco> <source dir>
set -euo pipefail
LOCO=$(realpath "$1")
SRC=$(realpath "$2")
CLUSTER=$SRC/scripts/netns-cluster.sh
SKIP=77
if [[ $(id -u) -ne 0 ]]; then
  echo "SKIP: not root: the emulated cluster needs root (network namespaces, links, tc)"
  exit $SKIP
fi
if ! ip netns add "lce$$probe" 2>/dev/null; then
  echo "SKIP: network namespaces are not available here"
  exit $SKIP
fi
ip netns del "lce$$probe"

T=$(mktemp -d)
cleanup() { rm -rf "$T"; }
trap cleanup EXIT
chmod 755 "$T"
H=10
# Enough steps that the run is still going when the driver asks for the rescale, even when
# the driver (niced under ctest) is starved while the nodes' ranks run.
STEPS=${LOCO_ELASTIC_STEPS:-1500}

# The driver runs on the cluster's head, beside the supervisor (scripts/netns-cluster.sh
# --launcher gives it the hostfile, nodectl and the node disks).
cat >"$T/driver.sh" <<'EOF'
#!/usr/bin/env bash
set -euo pipefail
T=$1 LOCO=$2 SRC=$3 H=$4 STEPS=$5
read -r -a NODES <<<"$NETNS_CLUSTER_NODES"
FAILING=${NODES[1]}
now() { date +%s.%N; }
last_step() { # the newest step of metrics.jsonl (0 when none yet)
  local s
  s=$(tail -c 4000 "$T/run/metrics.jsonl" 2>/dev/null | grep -o '"step":[0-9]*' | tail -n 1 || true)
  echo "${s#\"step\":}" | sed 's/^$/0/'
}
resumes() { grep -c '"resume"' "$T/run/metrics.jsonl" 2>/dev/null || true; }
wait_until() { # wait_until <seconds> <what> <shell condition>
  local limit=$1 what=$2 i
  for ((i = 0; i < limit * 10; i++)); do
    if eval "$3"; then return 0; fi
    kill -0 "$SUPERVISOR" 2>/dev/null || { echo "driver: the supervisor ended while waiting for $what"; return 1; }
    sleep 0.1
  done
  echo "driver: timed out waiting for $what"
  return 1
}

# A small model that takes a few tens of milliseconds per step here (so that the driver
# sees the steps go by).
TINY=(--set model.d_model=64 --set model.n_layers=2 --set model.n_heads=2
      --set model.n_kv_heads=1 --set model.d_ff=128 --set model.max_seq_len=64
      --set training.seq_len=64 --set training.micro_batch=2 --set training.steps=$STEPS
      --set schedule.warmup_steps=10 --set training.eval_interval=0 --set training.eval_batches=2
      --set training.log_interval=100000 --set distributed.outer.interval=$H
      --set distributed.timeout_s=30 --set checkpoint.at_sync=1 --set checkpoint.keep_last=3
      --set checkpoint.storage=node_local --set checkpoint.dir=$T/disk/ckpt)
"$LOCO" launch --hostfile "$NETNS_CLUSTER_HOSTFILE" --min-nodes 2 --backoff 0.5 \
  --probe-timeout 5 --watch-interval 1 --events "$T/events.jsonl" -- \
  "$LOCO" train "$SRC/configs/tiny-diloco.json" "${TINY[@]}" --out "$T/run" \
  >"$T/supervisor.log" 2>&1 &
SUPERVISOR=$!

# Phase 1: 3 nodes. The failure, a few syncs in, between two syncs.
wait_until 120 "step 150" '[[ $(last_step) -ge 150 ]]'
until (( $(last_step) % H >= 3 && $(last_step) % H <= 6 )); do sleep 0.002; done
T_FAIL=$(now)
echo "driver: failing node $FAILING at step $(last_step)"
"$NETNS_CLUSTER_CTL" down "$FAILING"
echo "driver: node $FAILING down at step ~$(last_step)"
# Phase 2: training again on 2 nodes (a step record after the resume record).
wait_until 120 "the restart" '[[ $(resumes) -ge 1 ]]'
S1=$(python3 -c "import json,sys; print([json.loads(l) for l in open('$T/run/metrics.jsonl') if '\"resume\"' in l][0]['step'])")
wait_until 120 "a step after the restart" '[[ $(last_step) -gt $S1 ]]'
T_AGAIN=$(now)
echo "driver: recovery $(python3 -c "print(f'{$T_AGAIN - $T_FAIL:.2f}')") s (failure -> training again at step $((S1 + 1)))"
echo "$T_FAIL $T_AGAIN" >"$T/recovery"
wait_until 120 "3 intervals on 2 nodes" '[[ $(last_step) -ge $((S1 + 3 * H)) ]]'
# Phase 3: the node is back; rescale at the next sync.
"$NETNS_CLUSTER_CTL" up "$FAILING"
kill -USR1 "$SUPERVISOR"
echo "driver: node $FAILING up, rescale requested at step ~$(last_step)"
rc=0
wait "$SUPERVISOR" || rc=$?
echo "driver: the supervisor exited $rc"
# The nodes' disks go with the cluster: keep a copy for the checks.
read -r -a DISKS <<<"$NETNS_CLUSTER_NODE_DISKS"
for i in "${!NODES[@]}"; do
  mkdir -p "$T/nodes/${NODES[i]}"
  cp -a "${DISKS[i]}/." "$T/nodes/${NODES[i]}/"
done
exit $rc
EOF
chmod +x "$T/driver.sh"

rc=0
t0=$(date +%s)
"$CLUSTER" -n 3 -r 1 --launcher --node-disk "$T/disk" -t 540 \
  -x OMP_NUM_THREADS=1 -x "LOCO_DATA_TRACE=$T/trace" -- \
  "$T/driver.sh" "$T" "$LOCO" "$SRC" "$H" "$STEPS" >"$T/cluster.log" 2>&1 || rc=$?
cat "$T/cluster.log"
echo "--- supervisor log (launches, exits)"
grep "loco launch" "$T/supervisor.log" || true
echo "wall time of the scenario: $(($(date +%s) - t0)) s"
if [[ $rc -ne 0 ]]; then
  echo "FAIL: the scenario exited $rc"
  tail -40 "$T/supervisor.log"
  exit 1
fi

python3 - "$T" "$H" "$STEPS" <<'EOF'
import glob, json, os, re, struct, sys
t, H, STEPS = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
errors = []
def fail(msg):
    errors.append(msg)
    print("FAIL:", msg)

events = [json.loads(l) for l in open(f"{t}/events.jsonl")]
launches = [e for e in events if e["event"] == "launch"]
sizes = [len(e["hosts"]) for e in launches]
print("launches on", sizes, "node(s)")
if sizes != [3, 2, 3]:
    fail(f"launches ran on {sizes} nodes, want [3, 2, 3]")

metrics = [json.loads(l) for l in open(f"{t}/run/metrics.jsonl")]
summary = json.load(open(f"{t}/run/summary.json"))
if summary["steps"] != STEPS or not summary["finite"]:
    fail(f"summary: steps {summary['steps']} (want {STEPS}), finite {summary['finite']}")
resumes = [r for r in metrics if "resume" in r]
if len(resumes) != 2:
    fail(f"{len(resumes)} resume records, want 2")
S = [r["step"] for r in resumes]
print("resumed at steps", S)
by_step = {}
for r in metrics:
    if "loss" in r:
        by_step[r["step"]] = r  # after a resume the records past it were dropped
# θ: what each restart loaded is what the run had at that step.
for r in resumes:
    e = r["resume"]["elastic"]
    logged = by_step.get(r["step"], {}).get("outer", {}).get("global_fingerprint")
    print(f"resume at {r['step']}: replicas {e['replicas_before']} -> {e['replicas_now']}, kept "
          f"{e['kept']}, new {e['new']}, dropped {e['dropped']}, θ_global {e['global_fingerprint']} "
          f"(logged at the sync: {logged})")
    if logged != e["global_fingerprint"]:
        fail(f"resume at step {r['step']}: loaded θ_global {e['global_fingerprint']}, the run had {logged}")
if len(resumes) == 2:
    a, b = resumes[0]["resume"]["elastic"], resumes[1]["resume"]["elastic"]
    if (a["replicas_before"], a["replicas_now"], len(a["dropped"]), len(a["new"])) != (3, 2, 1, 0):
        fail(f"first resume: {a}")
    if (b["replicas_before"], b["replicas_now"], len(b["dropped"]), len(b["new"])) != (2, 3, 0, 1):
        fail(f"second resume: {b}")
    if a["dropped"] != b["new"]:
        fail(f"the node that left ({a['dropped']}) is not the one that came back as new ({b['new']})")
    if sorted(a["kept"]) != sorted(b["kept"]):
        fail(f"the surviving replicas changed: {a['kept']} then {b['kept']}")
# Every sync logged a θ_global fingerprint (all ranks agreed on it, or the run would have stopped).
syncs = [s for s in by_step if s % H == 0]
missing = [s for s in syncs if "global_fingerprint" not in by_step[s].get("outer", {})]
if missing:
    fail(f"syncs without an agreed θ_global: {missing[:5]}")

# Data: each trace file is one process of one launch; its first step tells which launch.
starts = [0] + S
ends = S + [STEPS]
seen = {}
per_launch_steps = {}
lost = {}
for path in glob.glob(f"{t}/trace/windows-*.txt"):
    rows = []
    for line in open(path):
        parts = line.split()
        if len(parts) == 6:
            rows.append(tuple(int(x) for x in parts))
    if not rows:
        continue
    first = min(r[0] for r in rows)
    launch = max(i for i, s in enumerate(starts) if s < first)
    top = max(r[0] for r in rows)
    lost[launch] = max(lost.get(launch, 0), top - ends[launch])
    for step, epoch, slot, token, replica, replicas in rows:
        if step > ends[launch]:
            continue  # a step lost to the failure: redone after the restart
        key = (epoch, slot)
        if key in seen:
            fail(f"window (epoch {epoch}, slot {slot}) read twice: {seen[key]} and {(step, replica, replicas)}")
        seen[key] = (step, replica, replicas)
slots = sorted(seen)
epochs = {e for e, _ in slots}
want = [(0, i) for i in range(len(slots))]
if epochs != {0} or slots != want:
    fail(f"the windows read are not exactly the slots 0..{len(slots) - 1} of epoch 0")
B = 2
expected = sum((3 if s <= S[0] or s > S[1] else 2) * B for s in range(1, STEPS + 1)) if len(S) == 2 else -1
print(f"data: {len(slots)} windows read, slots 0..{len(slots) - 1}, none twice (expected {expected})")
if len(slots) != expected:
    fail(f"{len(slots)} windows read, expected {expected}")
print(f"steps lost: to the failure {lost.get(0)}, to the rescale {lost.get(1)} (H = {H})")
if lost.get(0, H + 1) > H:
    fail(f"{lost.get(0)} steps lost to the failure, more than H = {H}")
if lost.get(1, 1) != 0:
    fail(f"{lost.get(1)} steps lost to the rescale, want 0")

# Every node's own copy of a step's global state holds the same θ_global.
def tensor_hashes(path):
    with open(path, "rb") as f:
        head = f.read(64)
        n = struct.unpack_from("<Q", head, 16)[0]
        doc = json.loads(f.read(n))
    return {x["name"]: x["xxh64"] for x in doc["tensors"]}, doc["meta"]["step"]
copies = {}
for path in glob.glob(f"{t}/nodes/*/ckpt/step-*/global.bin"):
    hashes, step = tensor_hashes(path)
    copies.setdefault(step, set()).add(hashes["params"])
bad = [s for s, v in copies.items() if len(v) != 1]
print(f"node-local global states: {sum(1 for _ in glob.glob(f'{t}/nodes/*/ckpt/step-*/global.bin'))} files over {len(copies)} steps; all copies of a step agree: {not bad}")
if bad:
    fail(f"nodes hold different θ_global for steps {bad}")
if not copies:
    fail("no node-local global.bin found")
rec = [float(x) for x in open(f"{t}/recovery").read().split()]
ends = [e for e in events if e["event"] == "exit"]
if len(ends) >= 1 and len(launches) >= 2:
    print(f"recovery: {rec[1] - rec[0]:.2f} s from the failure to training again: the job ended "
          f"{ends[0]['time'] - rec[0]:.2f} s after the failure, the restart began "
          f"{launches[1]['time'] - ends[0]['time']:.2f} s later (probes, backoff), training "
          f"{rec[1] - launches[1]['time']:.2f} s after that (mpirun, start-up, resume)")
sys.exit(1 if errors else 0)
EOF
echo "elastic ok"
