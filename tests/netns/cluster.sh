#!/usr/bin/env bash
# scripts/netns-cluster.sh end to end: an emulated 2-node cluster (network namespaces joined by
# a bridge, real TCP between nodes, shared memory inside a node) behaves like real nodes, and
# the script leaves nothing behind, whatever happens.
#  - Bad input: not root, no `ip`/`tc`, a name in use, a bad rate -> exit 2, a clear message,
#    nothing created (and the namespace that was in use is left alone).
#  - A failing command, the time limit, SIGTERM and SIGINT -> their exit status, nothing left.
#  - 2 nodes x 2 ranks: each node's ranks have local ranks 0 and 1 of 2 and their node's own
#    host name; with distributed.replica_size 2 each DiLoCo replica is one node.
#  - `loco train` (DiLoCo across nodes, DDP inside each) over the emulated cluster logs the
#    same losses, bit for bit, as the same run on one host without namespaces.
# Needs root and network namespaces: otherwise it checks what it can and exits 77 (skipped).
# Usage: cluster.sh <path to loco> <source dir>
set -euo pipefail
LOCO=$(realpath "$1")
SRC=$(realpath "$2")
CLUSTER=$SRC/scripts/netns-cluster.sh
SKIP=77
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1

T=$(mktemp -d)
chmod 755 "$T" # the not-root case runs a copy of the script from here as nobody
NAME=lct$$ # the prefix of every cluster this test makes (with a suffix per case)
BACKGROUND=""
cleanup() {
  [[ -n $BACKGROUND ]] && kill -KILL "$BACKGROUND" 2>/dev/null || true
  # Only the namespaces this test made itself (the probe, the name-in-use case).
  ip netns del "${NAME}busy-n1" 2>/dev/null || true
  ip netns del "${NAME}probe" 2>/dev/null || true
  rm -rf "$T"
}
trap cleanup EXIT
cd "$T"
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }

# ---------------------------------------------------------------- not root
cp "$CLUSTER" "$T/netns-cluster.sh"
chmod 755 "$T/netns-cluster.sh"
if [[ $(id -u) -eq 0 ]]; then
  as_user=(setpriv --reuid=65534 --regid=65534 --clear-groups)
else
  as_user=()
fi
rc=0
"${as_user[@]}" "$T/netns-cluster.sh" -- true >"$T/notroot.out" 2>&1 || rc=$?
[[ $rc -eq 2 ]] || fail "not root: exit $rc (want 2)"
grep -q "must run as root" "$T/notroot.out" || { fail "not root: no clear message"; cat "$T/notroot.out"; }
if [[ $(id -u) -ne 0 ]]; then
  echo "SKIP: not root: the emulated cluster needs root (network namespaces, links, tc)"
  exit $SKIP
fi
# What the cluster is made of: a named namespace holding a bridge and a veth pair.
probe=${NAME}probe
if ! ip netns add "$probe" 2>"$T/probe.err"; then
  echo "SKIP: network namespaces are not available here: ip netns add: $(cat "$T/probe.err")"
  exit $SKIP
fi
probe_ok=1
ip -n "$probe" link add b0 type bridge 2>"$T/probe.err" &&
  ip -n "$probe" link add v0 type veth peer name v1 2>>"$T/probe.err" || probe_ok=0
ip netns del "$probe"
if ((!probe_ok)); then
  echo "SKIP: no bridge or veth links in network namespaces here: $(cat "$T/probe.err")"
  exit $SKIP
fi

# ---------------------------------------------------------------- leftovers
root_links() { ip -o link show | awk -F': ' '{ print $2 }' | sort; }
LINKS_BEFORE=$(root_links)
# check_clean <case> <name>: nothing of the run named <name> exists any more.
check_clean() {
  local what=$1 name=$2 left
  left=$(ip netns list | awk '{ print $1 }' | grep "^$name-" || true)
  [[ -z $left ]] || fail "$what: namespaces left behind: $left"
  left=$(find /tmp -maxdepth 1 -name "$name.*" 2>/dev/null)
  [[ -z $left ]] || fail "$what: scratch left behind: $left"
  left=$(find /dev/shm -maxdepth 1 -name "*$name-*" 2>/dev/null)
  [[ -z $left ]] || fail "$what: shared memory left behind: $left"
  local now
  now=$(root_links)
  [[ $now == "$LINKS_BEFORE" ]] || fail "$what: the root namespace's links changed: $(diff <(echo "$LINKS_BEFORE") <(echo "$now") | tr '\n' ' ')"
}
# expect <case> <want exit> <message or ''> -- script args...
expect() {
  local what=$1 want=$2 message=$3 rc=0
  shift 4
  "$@" >"$T/$what.out" 2>&1 || rc=$?
  echo "$what: exit $rc"
  [[ $rc -eq $want ]] || { fail "$what: exit $rc (want $want)"; tail -5 "$T/$what.out"; }
  [[ -z $message ]] || grep -qF -- "$message" "$T/$what.out" ||
    { fail "$what: output lacks: $message"; tail -5 "$T/$what.out"; }
}

# ---------------------------------------------------------------- bad input
# A PATH holding every tool the script needs but one.
path_without() {
  local dir=$T/path-without-$1 tool
  mkdir -p "$dir"
  for tool in bash sh env id ip tc mpirun timeout unshare mktemp rm mkdir chmod cat sleep; do
    [[ $tool == "$1" ]] || ln -sf "$(command -v "$tool")" "$dir/$tool"
  done
  echo "$dir"
}
expect no-ip 2 "'ip' not found" -- env PATH="$(path_without ip)" bash "$CLUSTER" --name "${NAME}a" -- true
check_clean no-ip "${NAME}a"
expect no-tc 2 "'tc' not found" -- env PATH="$(path_without tc)" bash "$CLUSTER" --name "${NAME}b" -- true
check_clean no-tc "${NAME}b"
expect bad-rate 2 "--rate 10 megabits" -- "$CLUSTER" --name "${NAME}c" --rate "10 megabits" -- true
check_clean bad-rate "${NAME}c"
# A rate tc itself rejects: found half-way through building the cluster (node 0's link).
expect tc-rejects 2 "tc rejected --rate 0bit" -- "$CLUSTER" --name "${NAME}g" --rate 0bit -- true
check_clean tc-rejects "${NAME}g"
expect bad-nodes 2 "--nodes 0" -- "$CLUSTER" --name "${NAME}d" --nodes 0 -- true
expect no-command 2 "no COMMAND" -- "$CLUSTER" --name "${NAME}d"
# A name in use: the namespace of its node 1 exists already (another run, or a killed one).
ip netns add "${NAME}busy-n1"
expect name-in-use 2 "'${NAME}busy-n1' already exists" -- "$CLUSTER" --name "${NAME}busy" -- true
[[ -e /run/netns/${NAME}busy-n1 ]] || fail "name-in-use: the namespace that was in use was removed"
ip netns del "${NAME}busy-n1"
check_clean name-in-use "${NAME}busy"

# ---------------------------------------------------------------- failure, time limit, signals
expect failing-command 3 "" -- "$CLUSTER" --name "${NAME}e" -t 60 -- sh -c 'exit 3'
check_clean failing-command "${NAME}e"
expect time-limit 124 "did not finish within --time-limit 3 s" -- \
  "$CLUSTER" --name "${NAME}f" -t 3 --rate 10mbit -- sleep 1000.125
check_clean time-limit "${NAME}f"
pgrep -f "sleep 1000.125" >/dev/null && fail "time-limit: the ranks still run"

# interrupt <signal> <want exit>: starts a 2 x 2 cluster, waits until its ranks run, signals
# the script alone, and checks that everything is gone.
interrupt() {
  local sig=$1 want=$2 name=${NAME}$1 marker=1000.$$$2 rc=0 i
  # Job control on, so that the background script gets SIGINT the way a terminal would
  # deliver it (without it bash starts background jobs with SIGINT ignored).
  set -m
  "$CLUSTER" --name "$name" -n 2 -r 2 -t 120 -- sleep "$marker" >"$T/$sig.out" 2>&1 &
  BACKGROUND=$!
  set +m
  for ((i = 0; i < 300; i++)); do
    [[ $(pgrep -fc "^sleep $marker") -eq 4 ]] && break
    sleep 0.1
  done
  [[ $(pgrep -fc "^sleep $marker") -eq 4 ]] || fail "$sig: the 4 ranks did not start"
  kill "-$sig" "$BACKGROUND"
  wait "$BACKGROUND" || rc=$?
  BACKGROUND=""
  echo "$sig: exit $rc"
  [[ $rc -eq $want ]] || { fail "$sig: exit $rc (want $want)"; tail -5 "$T/$sig.out"; }
  check_clean "$sig" "$name"
  ! pgrep -f "^sleep $marker" >/dev/null || fail "$sig: ranks still run after the script ended"
}
interrupt TERM 143
interrupt INT 130

# ---------------------------------------------------------------- topology as on real nodes
# Each rank prints its host name, world rank and node-local rank and size.
expect probe 0 "" -- "$CLUSTER" --name "${NAME}p" -n 2 -r 2 -t 60 -- \
  sh -c 'echo "rank $(hostname) $OMPI_COMM_WORLD_RANK $OMPI_COMM_WORLD_LOCAL_RANK $OMPI_COMM_WORLD_LOCAL_SIZE"'
check_clean probe "${NAME}p"
python3 - "$T/probe.out" "${NAME}p" <<'EOF' || fail "probe: ranks are not laid out as on 2 nodes"
import sys
rows = sorted(l.split()[1:] for l in open(sys.argv[1]) if l.startswith("rank "))
rows = [(host, int(rank), int(lrank), int(lsize)) for host, rank, lrank, lsize in rows]
rows.sort(key=lambda r: r[1])
name = sys.argv[2]
want = [(f"{name}-n{r // 2}", r, r % 2, 2) for r in range(4)]
print("probe:", rows)
if rows != want:
    print("FAIL: want", want)
    sys.exit(1)
EOF

# ---------------------------------------------------------------- loco: netns == one host
CONFIG=$SRC/configs/tiny-diloco.json
TINY=(--set model.d_model=32 --set model.n_layers=2 --set model.n_heads=2
      --set model.n_kv_heads=1 --set model.d_ff=64 --set model.max_seq_len=32
      --set training.seq_len=32 --set training.micro_batch=2 --set training.steps=6
      --set schedule.warmup_steps=1 --set training.eval_interval=3 --set training.eval_batches=2
      --set distributed.replica_size=2 --set distributed.outer.interval=3
      --set distributed.timeout_s=60)
# Each rank also records what its node's links carried: eth0 (to the other node) and lo.
TRAIN_AND_COUNT='"$@"; rc=$?
  for dev in eth0 lo; do
    echo "$(hostname) $dev $(cat /sys/class/net/$dev/statistics/tx_bytes)"
  done > "$COUNTS/rank$OMPI_COMM_WORLD_RANK"
  exit $rc'
mkdir -p "$T/counts"
expect netns-train 0 "" -- "$CLUSTER" --name "${NAME}t" -n 2 -r 2 -t 240 -x COUNTS="$T/counts" -- \
  sh -c "$TRAIN_AND_COUNT" sh "$LOCO" train "$CONFIG" "${TINY[@]}" --out "$T/netns"
check_clean netns-train "${NAME}t"
expect local-train 0 "" -- timeout -k 5 240 mpirun --allow-run-as-root --oversubscribe \
  --bind-to none -np 4 "$LOCO" train "$CONFIG" "${TINY[@]}" --out "$T/local"

python3 - "$T" "${NAME}t" <<'EOF' || fail "the emulated cluster's run differs from the one-host run"
import glob, json, os, sys
t, name = sys.argv[1], sys.argv[2]
errors = []
def records(run):
    return [json.loads(l) for l in open(f"{t}/{run}/metrics.jsonl")]
netns, local = records("netns"), records("local")
def losses(recs, key):
    return [(r["step"], r[key]) for r in recs if key in r]
for key in ("loss", "val_loss"):
    a, b = losses(netns, key), losses(local, key)
    print(f"{key}: netns {a}")
    if not a:
        errors.append(f"no {key} records")
    if a != b:  # floats parsed from the same digits: equal iff bitwise equal
        errors.append(f"{key} differs: netns {a} vs one host {b}")
# loco saw the layout a real 2-node cluster gives (summary.json's "launch": the composition
# root's record of every rank's host, node, node-local rank/size and replica).
for run, nodes in (("netns", 2), ("local", 1)):
    launch = json.load(open(f"{t}/{run}/summary.json"))["launch"]
    got = [(r["host"] if run == "netns" else "-", r["node"], r["local_rank"], r["local_size"],
            r["replica"], r["rank_in_replica"]) for r in launch["ranks"]]
    if run == "netns":
        want = [(f"{name}-n{r // 2}", r // 2, r % 2, 2, r // 2, r % 2) for r in range(4)]
    else:
        want = [("-", 0, r, 4, r // 2, r % 2) for r in range(4)]
    print(f"launch ({run}): {launch['nodes']} node(s), {got}")
    if launch["nodes"] != nodes or got != want:
        errors.append(f"{run}: launch record {got} (nodes {launch['nodes']}), want {want}")
# The run really crossed the emulated network: each node's eth0 (its link to the switch)
# carried at least what its 2 ranks sent to the other replica in the outer syncs...
comm = json.load(open(f"{t}/netns/summary.json"))["comm"]
outer = comm["fragments"]["sync_sent_bytes"]  # per rank
inner = comm["sent_bytes"] - outer  # per rank: the DDP all-reduces inside the node
counts = {}
for f in glob.glob(f"{t}/counts/rank*"):
    for line in open(f):
        host, dev, sent = line.split()
        counts[(host, dev)] = max(counts.get((host, dev), 0), int(sent))
print(f"per rank: outer syncs {outer} B, DDP {inner} B; tx bytes per node and device: {counts}")
for node in (f"{name}-n0", f"{name}-n1"):
    if counts.get((node, "eth0"), 0) < 2 * outer:
        errors.append(f"{node} sent {counts.get((node, 'eth0'))} B over its link (want >= {2 * outer})")
    # ...while the DDP all-reduces inside a node went through shared memory: with TCP they
    # would cross lo (4x the bound below); with shared memory lo carries only the launcher's
    # few kilobytes.
    if counts.get((node, "lo"), 0) > inner / 2:
        errors.append(f"{node} sent {counts.get((node, 'lo'))} B over lo: intra-node MPI used TCP?")
for e in errors:
    print("FAIL:", e)
sys.exit(1 if errors else 0)
EOF

# --reap removes the namespaces of a run that was killed (its PID is gone), never a live one.
dead=999999
while kill -0 "$dead" 2>/dev/null; do dead=$((dead + 1)); done
ip netns add "loco$dead-n0" && ip netns add "loco$dead-sw" && ip netns add "loco$$-n0" || fail "reap: setup"
bash "$CLUSTER" --reap >"$T/reap.out" 2>&1 || fail "reap: exit $?"
ip netns list | grep -q "^loco$dead-" && fail "reap: loco$dead-* still there"
ip netns list | grep -q "^loco$$-n0" || fail "reap: removed a live run's namespace"
grep -q "removed 2 stale" "$T/reap.out" || fail "reap: $(cat "$T/reap.out")"
ip netns del "loco$$-n0" 2>/dev/null || true
ip netns del "loco$dead-n0" 2>/dev/null || true
ip netns del "loco$dead-sw" 2>/dev/null || true

if [[ $fails -ne 0 ]]; then
  echo "$fails failure(s)"
  exit 1
fi
echo "netns cluster ok"
