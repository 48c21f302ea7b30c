#!/usr/bin/env bash
# Quality of an elastic run: a DiLoCo run under `loco launch` on an emulated 3-node cluster
# (scripts/netns-cluster.sh) loses node 1 mid-run (every process killed, link down), goes on
# with 2 nodes for exactly 3 outer intervals, gets the node back (rescale at the next sync)
# and finishes on 3 nodes. Beside it, on the same tokens: an uninterrupted 3-worker run and
# a 2-worker run. Prints a markdown table (docs/results.md).
#
# Token budget: the elastic run trains N steps, of which 3H on 2 replicas, so it reads
# (3N - 3H) * B*T tokens; the 3-worker run trains N - H steps, the 2-worker one (3N - 3H) / 2
# (N and H even). Every run: configs/tiny-diloco.json (H = outer.interval), checkpoints at
# every outer sync, validation every 100 steps and at the end.
#
# Needs root (network namespaces). Usage: sudo scripts/elastic-compare.sh [N] [-- --set ...]
# Default N = 600. Extra --set arguments go to every run. Takes ~10 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=$(pwd)
LOCO=$SRC/build/loco
N=${1:-600}
[[ $# -gt 0 ]] && shift
[[ ${1:-} == -- ]] && shift
EXTRA=("$@")
[[ -x $LOCO ]] || { echo "elastic-compare: build loco first (scripts/build.sh)" >&2; exit 2; }
[[ $(id -u) -eq 0 ]] || { echo "elastic-compare: needs root (network namespaces)" >&2; exit 2; }
H=$(python3 -c "import json; print(json.load(open('configs/tiny-diloco.json'))['distributed']['outer']['interval'])")
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
OUT=${ELASTIC_COMPARE_OUT:-$SRC/runs/elastic-compare}
rm -rf "$OUT"
mkdir -p "$OUT"
COMMON=(--set checkpoint.at_sync=1 --set training.eval_interval=100 "${EXTRA[@]}")

cat >"$OUT/driver.sh" <<'EOF'
#!/usr/bin/env bash
# On the cluster's head: the supervisor, a failure after 1/4 of the steps, the node back
# after 3 outer intervals on 2 nodes.
set -euo pipefail
OUT=$1 LOCO=$2 SRC=$3 H=$4 N=$5
shift 5
read -r -a NODES <<<"$NETNS_CLUSTER_NODES"
last_step() {
  local s
  s=$(tail -c 8000 "$OUT/elastic/metrics.jsonl" 2>/dev/null | grep -o '"step":[0-9]*' | tail -n 1 || true)
  s=${s#\"step\":}
  echo "${s:-0}"
}
resumes() { grep -c '"resume"' "$OUT/elastic/metrics.jsonl" 2>/dev/null || true; }
"$LOCO" launch --hostfile "$NETNS_CLUSTER_HOSTFILE" --min-nodes 2 --backoff 0.5 \
  --events "$OUT/events.jsonl" -- "$LOCO" train "$SRC/configs/tiny-diloco.json" \
  --set training.steps="$N" --set checkpoint.storage=node_local \
  --set checkpoint.dir="$OUT/disk/ckpt" "$@" --out "$OUT/elastic" >"$OUT/supervisor.log" 2>&1 &
SUP=$!
# The failure: a few steps into the interval after step N/4.
until (($(last_step) >= N / 4 + 3)); do sleep 0.05; done
"$NETNS_CLUSTER_CTL" down "${NODES[1]}"
until (($(resumes) >= 1)); do sleep 0.1; done
S1=$(grep '"resume"' "$OUT/elastic/metrics.jsonl" | head -n 1 | grep -o '"step":[0-9]*' | tail -n 1)
S1=${S1#\"step\":}
# The rescale takes effect at the next sync: ask once 2 intervals and a step are done, so
# that exactly 3 intervals run on 2 nodes.
until (($(last_step) >= S1 + 2 * H + 1)); do sleep 0.05; done
"$NETNS_CLUSTER_CTL" up "${NODES[1]}"
kill -USR1 "$SUP"
wait "$SUP"
EOF
chmod +x "$OUT/driver.sh"

echo "elastic-compare: elastic run (3 -> 2 -> 3 nodes, $N steps)" >&2
"$SRC/scripts/netns-cluster.sh" -n 3 -r 1 --launcher --node-disk "$OUT/disk" -t 3000 \
  -x OMP_NUM_THREADS=1 -- "$OUT/driver.sh" "$OUT" "$LOCO" "$SRC" "$H" "$N" "${COMMON[@]}"
TWO_STEPS=$(python3 - "$OUT" "$H" "$N" <<'EOF'
import json, sys
out, H, N = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
r = [json.loads(l) for l in open(f"{out}/elastic/metrics.jsonl") if '"resume"' in l]
s1, s2 = r[0]["step"], r[1]["step"]
assert s2 - s1 == 3 * H, f"{s2 - s1} steps on 2 nodes, want {3 * H}"
print((3 * N - 3 * H) // 2)
EOF
)
echo "elastic-compare: 3-worker run ($((N - H)) steps)" >&2
mpirun --oversubscribe --bind-to none -np 3 "$LOCO" train configs/tiny-diloco.json \
  --set training.steps=$((N - H)) "${COMMON[@]}" --out "$OUT/three" >"$OUT/three.log" 2>&1
echo "elastic-compare: 2-worker run ($TWO_STEPS steps)" >&2
mpirun --oversubscribe --bind-to none -np 2 "$LOCO" train configs/tiny-diloco.json \
  --set training.steps="$TWO_STEPS" "${COMMON[@]}" --out "$OUT/two" >"$OUT/two.log" 2>&1

python3 - "$OUT" "$H" <<'EOF'
import json, sys
out, H = sys.argv[1], int(sys.argv[2])
def run(name):
    recs = [json.loads(l) for l in open(f"{out}/{name}/metrics.jsonl")]
    s = json.load(open(f"{out}/{name}/summary.json"))
    vals = {r["step"]: r["val_loss"] for r in recs if "val_loss" in r}
    return s, vals
rows = []
for name, label in (("elastic", "elastic 3 → 2 → 3"), ("three", "3 workers"), ("two", "2 workers")):
    s, vals = run(name)
    rows.append((label, s["final_val_loss"], s["tokens"], s["steps"], vals))
r = [json.loads(l) for l in open(f"{out}/elastic/metrics.jsonl") if '"resume"' in l]
print(f"elastic: failure resumed at step {r[0]['step']} on 2 nodes, rescaled at step {r[1]['step']} "
      f"to 3 nodes; H = {H}\n")
print("| run | final val loss | tokens | steps |")
print("|---|---|---|---|")
for label, v, tokens, steps, _ in rows:
    print(f"| {label} | {v:.4f} | {tokens:,} | {steps} |")
EOF
