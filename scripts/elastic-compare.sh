#!/usr/bin/env bash
# Quality of an elastic run, on one machine with plain mpirun: a DiLoCo run that trains on 3
# replicas, is resumed on 2 (one replica dropped), then on 3 again (a fresh replica joins),
# beside an uninterrupted 3-worker run and an uninterrupted 2-worker run that read the same
# number of tokens. Prints a markdown table (docs/results.md).
#
# How the elastic run is cut: each piece is `loco train` with training.steps set to the step
# where the piece ends, the next one `--resume latest` with a larger training.steps (every
# piece ends on an outer sync, where checkpoint.at_sync = 1 writes a checkpoint). A cosine
# or WSD schedule depends on training.steps, so a piece would decay the learning rate at its
# own end; every run here uses schedule.type = "constant" (linear warm-up, then flat), whose
# learning rate at a step does not depend on training.steps: the three pieces together follow
# the same schedule as one run would.
#
# Token budget, in worker-steps (one step of one replica = micro_batch * seq_len tokens):
# the elastic run does 3*A + 2*B + 3*C of them (A steps on 3 replicas, B on 2, C on 3); the
# 3-worker run trains that / 3 steps, the 2-worker run that / 2. The defaults (A = C = 160,
# B = 180) give 1320 worker-steps: 440 and 660 steps. All step counts must be multiples of
# the outer interval H (20 in configs/tiny-diloco.json).
#
# Every run also writes its window trace (LOCO_DATA_TRACE); the script checks that the three
# runs read exactly the same training windows (the first 1320 * micro_batch of the shuffled
# deck), each once.
#
# Usage: scripts/elastic-compare.sh [OUTDIR] [-- --set KEY=VALUE ...]
#   OUTDIR (default runs/elastic-compare) must not exist. Extra --set arguments go to every
#   run. Environment: A, B, C (steps of the pieces). About 8 minutes on 2 busy cores.
set -euo pipefail
cd "$(dirname "$0")/.."
LOCO=$PWD/build/loco
OUT=${1:-runs/elastic-compare}
[[ $# -gt 0 ]] && shift
[[ ${1:-} == -- ]] && shift
EXTRA=("$@")
A=${A:-160} B=${B:-180} C=${C:-160}
[[ -x $LOCO ]] || { echo "elastic-compare: build loco first (scripts/build.sh)" >&2; exit 2; }
if [[ -e $OUT ]]; then
  echo "elastic-compare: $OUT exists; give another directory or remove it" >&2
  exit 2
fi
WORKER_STEPS=$((3 * A + 2 * B + 3 * C))
if ((WORKER_STEPS % 6 != 0)); then
  echo "elastic-compare: 3*A + 2*B + 3*C = $WORKER_STEPS must be a multiple of 6 (so that a" \
    "3-worker and a 2-worker run can read as many tokens)" >&2
  exit 2
fi
THREE_STEPS=$((WORKER_STEPS / 3))
TWO_STEPS=$((WORKER_STEPS / 2))
mkdir -p "$OUT"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
COMMON=(--set schedule.type=constant --set checkpoint.at_sync=1
  --set training.eval_interval=100 --set training.log_interval=20 "${EXTRA[@]}")

# train <name> <ranks> <steps> [loco train arguments...]
train() {
  local name=$1 np=$2 steps=$3
  shift 3
  echo "elastic-compare: $name: $np rank(s) to step $steps" >&2
  mpirun --oversubscribe --bind-to none -np "$np" -x OMP_NUM_THREADS \
    -x "LOCO_DATA_TRACE=$OUT/trace-$name" \
    "$LOCO" train configs/tiny-diloco.json --set training.steps="$steps" "${COMMON[@]}" "$@" \
    >>"$OUT/$name.log" 2>&1 || {
    echo "elastic-compare: $name failed; see $OUT/$name.log" >&2
    exit 1
  }
}

train elastic 3 "$A" --out "$OUT/elastic"
train elastic 2 $((A + B)) --out "$OUT/elastic" --resume latest
train elastic 3 $((A + B + C)) --out "$OUT/elastic" --resume latest
train three 3 "$THREE_STEPS" --out "$OUT/three"
train two 2 "$TWO_STEPS" --out "$OUT/two"

python3 - "$OUT" "$WORKER_STEPS" <<'EOF'
import glob, json, sys
out, worker_steps = sys.argv[1], int(sys.argv[2])
def windows(name):
    seen = []
    for path in glob.glob(f"{out}/trace-{name}/windows-*.txt"):
        seen += [tuple(map(int, line.split()[1:3])) for line in open(path)]
    return seen
reads = {name: windows(name) for name in ("elastic", "three", "two")}
for name, seen in reads.items():
    if len(seen) != len(set(seen)):
        sys.exit(f"elastic-compare: {name} read a window twice")
if not (set(reads["elastic"]) == set(reads["three"]) == set(reads["two"])):
    sys.exit("elastic-compare: the runs read different training windows")
resumes = [json.loads(l)["resume"]["elastic"]
           for l in open(f"{out}/elastic/metrics.jsonl") if '"resume"' in l]
for r in resumes:
    print(f"elastic resume: replicas {r['replicas_before']} -> {r['replicas_now']}, kept "
          f"{len(r['kept'])}, new {len(r['new'])}, dropped {len(r['dropped'])}")
print(f"all three runs read the same {len(reads['two'])} training windows, each once\n")
print("| run | steps | tokens | outer syncs | final val loss |")
print("|---|---|---|---|---|")
for name, label in (("elastic", "elastic 3 → 2 → 3"), ("three", "3 workers, uninterrupted"),
                    ("two", "2 workers, uninterrupted")):
    s = json.load(open(f"{out}/{name}/summary.json"))
    recs = [json.loads(l) for l in open(f"{out}/{name}/metrics.jsonl")]
    syncs = max(r["outer"]["outer_step"] for r in recs if "outer_step" in r.get("outer", {}))
    print(f"| {label} | {s['steps']} | {s['tokens']:,} | {syncs} | {s['final_val_loss']:.4f} |")
EOF
