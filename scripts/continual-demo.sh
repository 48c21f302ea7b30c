#!/usr/bin/env bash
# Continual pre-training with replay, on this machine's CPU (about 10 minutes on 2 cores):
#
#  1. the tiny model (configs/tiny.json, micro_batch 8) learns the bundled KJV Bible for
#     PRE_STEPS steps with the infinite schedule, stopping in its constant phase (warmup,
#     cosine cool-down to half the peak, constant; no anneal), and checkpoints;
#  2. a second English text that Debian packages, the Jargon File 4.4.7 (dict-jargon:
#     /usr/share/dictd/jargon.dict.dz, public domain, 1.4 MB), is byte-tokenized (loco
#     tokenize, last 5 % for validation);
#  3. two continuations start from the KJV model (model.init_from; fresh AdamW state) and train
#     CONT_STEPS steps on the new text: 0 % replay (data.train = the Jargon shard) and 5 %
#     replay (data.train = a mixture, 95 % Jargon, 5 % KJV). Both re-warm (linear warmup to
#     the peak lr again, from step 0 of the continuation), cool down, hold, and anneal at the
#     end; both report the KJV and Jargon validation losses as they go (data.val = Jargon,
#     data.extra_val = KJV);
#  4. `loco eval` measures every model (KJV model, both continuations) on the same windows of
#     both validation sets: forgetting = KJV loss after − before, learning = Jargon loss before
#     − after. The table goes to stdout and $OUT/table.md.
#
# Usage: scripts/continual-demo.sh [output dir]   (default runs/continual-demo; must not exist)
# Environment: PRE_STEPS (600), CONT_STEPS (300), EVAL_BATCHES (40 batches of 8 windows),
# LOCO (build/loco). Needs dict-jargon (apt-get install dict-jargon) and python3.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
LOCO=${LOCO:-$root/build/loco}
OUT=${1:-$root/runs/continual-demo}
PRE_STEPS=${PRE_STEPS:-600}
CONT_STEPS=${CONT_STEPS:-300}
EVAL_BATCHES=${EVAL_BATCHES:-40}
JARGON=/usr/share/dictd/jargon.dict.dz

[[ -x $LOCO ]] || { echo "continual-demo: no $LOCO (build first: scripts/build.sh)" >&2; exit 2; }
[[ -r $JARGON ]] || {
  echo "continual-demo: needs the Jargon File: apt-get install dict-jargon ($JARGON)" >&2
  exit 2
}
if [[ -e $OUT ]]; then
  echo "continual-demo: $OUT exists; give another directory or remove it" >&2
  exit 2
fi
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
cd "$root"
run() { echo "+ $*" >&2; nice -n 10 "$@"; }

# The new text.
zcat "$JARGON" >"$OUT/jargon.txt"
run "$LOCO" tokenize "$OUT/jargon.txt" --train "$OUT/jargon-train.bin" \
  --val "$OUT/jargon-val.bin" --val-fraction 0.05

COMMON=(--set training.micro_batch=8 --set training.seq_len=128 --set training.eval_batches=8
        --set training.log_interval=50 --set optimizer.lr=0.003 --set schedule.type=infinite
        --set schedule.const_lr_ratio=0.5 --set schedule.min_lr_ratio=0.1)

# 1. The KJV model: warmup 30, cool-down to 0.5·lr by step 300, then constant (no anneal; the
# steps for PRE_STEPS = 600, in proportion otherwise): a
# checkpoint of the infinite schedule's constant phase, ready to continue from.
run "$LOCO" train configs/tiny.json "${COMMON[@]}" --set training.steps="$PRE_STEPS" \
  --set schedule.warmup_steps=$((PRE_STEPS / 20)) --set schedule.cooldown_steps=$((PRE_STEPS * 9 / 20)) \
  --set schedule.anneal_steps=0 \
  --set training.eval_interval=$((PRE_STEPS / 6)) --set checkpoint.interval="$PRE_STEPS" \
  --set 'data.extra_val=[{"name": "jargon", "path": "'"$OUT/jargon-val.bin"'"}]' \
  --out "$OUT/kjv"

# 2. The continuations: same schedule, seed and steps; only data.train differs.
# Re-warm over the first 10 %, cool down over the next 40 %, hold, anneal over the last 20 %.
cont_schedule=(--set training.steps="$CONT_STEPS" --set schedule.warmup_steps=$((CONT_STEPS / 10))
               --set schedule.cooldown_steps=$((CONT_STEPS * 2 / 5))
               --set schedule.anneal_steps=$((CONT_STEPS / 5))
               --set training.eval_interval=$((CONT_STEPS / 6)) --set checkpoint.interval="$CONT_STEPS"
               --set model.init_from="$OUT/kjv"
               --set data.val="$OUT/jargon-val.bin"
               --set 'data.extra_val=[{"name": "kjv", "path": "data/kjv-val.bin"}]')
run "$LOCO" train configs/tiny.json "${COMMON[@]}" "${cont_schedule[@]}" \
  --set data.train="$OUT/jargon-train.bin" --out "$OUT/replay-0"
run "$LOCO" train configs/tiny.json "${COMMON[@]}" "${cont_schedule[@]}" \
  --set 'data.train=[{"path": "'"$OUT/jargon-train.bin"'", "weight": 0.95}, {"path": "data/kjv-train.bin", "weight": 0.05}]' \
  --out "$OUT/replay-5"
# 3. Every model on the same windows of both validation sets.
evaluate() { # evaluate <model> <shard> -> loss
  nice -n 10 "$LOCO" eval "$1" --data "$2" --batch-size 8 --max-batches "$EVAL_BATCHES" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["loss"])'
}
{
  for m in kjv replay-0 replay-5; do
    printf '%s %s %s\n' "$m" "$(evaluate "$OUT/$m" data/kjv-val.bin)" \
      "$(evaluate "$OUT/$m" "$OUT/jargon-val.bin")"
  done
} >"$OUT/losses.txt"
python3 - "$OUT" <<'EOF'
import json, sys
out = sys.argv[1]
rows = {l.split()[0]: tuple(map(float, l.split()[1:])) for l in open(f"{out}/losses.txt")}
kjv0, jar0 = rows["kjv"]
lines = ["| model | KJV val loss | Jargon val loss | forgetting (KJV Δ) | learning (Jargon −Δ) | KJV windows replayed |",
         "|---|---|---|---|---|---|"]
names = {"kjv": "KJV model (before)", "replay-0": "continued, 0 % replay", "replay-5": "continued, 5 % replay"}
for m in ("kjv", "replay-0", "replay-5"):
    k, j = rows[m]
    s = json.load(open(f"{out}/{m}/summary.json"))
    mix = s.get("data_mixture") or []
    kjv_windows = "—" if m == "kjv" else next((x["windows_read"] for x in mix if "kjv" in x["path"]), 0)
    lines.append(f"| {names[m]} | {k:.4f} | {j:.4f} | "
                 f"{'—' if m == 'kjv' else f'{k - kjv0:+.4f}'} | {'—' if m == 'kjv' else f'{jar0 - j:+.4f}'} | {kjv_windows} |")
open(f"{out}/table.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
EOF
