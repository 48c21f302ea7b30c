#!/usr/bin/env bash
# The comparison users run: DDP, DiLoCo, MuLoCo and SparseLoCo on the bundled corpus with the
# same number of workers and tokens, then a table (final validation loss, bytes sent per
# worker, ratio to DDP, bits per kept element) and a plot of validation loss against
# cumulative bytes sent.
#
#   scripts/compare.sh                       # 4 workers, 300 steps each (~15 min on 2 cores)
#   WORKERS=2 STEPS=100 scripts/compare.sh   # quicker
#   OUT=runs/compare scripts/compare.sh -- --set training.seq_len=64   # extra args to every run
#   REPORT_ONLY=1 scripts/compare.sh         # redo the table and plot from existing runs
#
# Writes $OUT/<method>/ (each run directory), $OUT/results.md (the table) and
# $OUT/loss-vs-bytes.png (gnuplot).
set -euo pipefail
cd "$(dirname "$0")/.."
WORKERS=${WORKERS:-4}
STEPS=${STEPS:-300}
OUT=${OUT:-runs/compare}
METHODS=${METHODS:-"ddp diloco muloco sparseloco"}
[[ "${1:-}" == "--" ]] && shift
EXTRA=("$@")
[[ -x build/loco ]] || scripts/build.sh
command -v gnuplot >/dev/null || { echo "compare.sh: gnuplot is missing (scripts/install-deps.sh)"; exit 1; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
mkdir -p "$OUT"

for method in $METHODS; do
  [[ "${REPORT_ONLY:-0}" == 1 ]] && break  # REPORT_ONLY=1: table and plot from existing runs
  config=configs/tiny-$method.json
  [[ -f "$config" ]] || { echo "compare.sh: $config not found"; exit 1; }
  echo "==> $method: $WORKERS workers, $STEPS steps ($config)"
  rm -rf "${OUT:?}/$method"
  # Validation every 25 steps gives the curve; every method's outer interval divides it or
  # the curve point is the rank-0 model between syncs (stated in the results).
  mpirun -np "$WORKERS" --oversubscribe --bind-to none -x OMP_NUM_THREADS=1 \
    build/loco train "$config" --out "$OUT/$method" --set training.steps="$STEPS" \
    --set training.eval_interval=25 --set training.log_interval=25 "${EXTRA[@]}" |
    grep -E "val loss|^method|^(ddp|diloco) |outer syncs|done:" || true
done

python3 - "$OUT" $METHODS <<'PY'
import json, os, sys
out, methods = sys.argv[1], sys.argv[2:]
rows, curves = [], {}
for m in methods:
    d = os.path.join(out, m)
    s = json.load(open(os.path.join(d, "summary.json")))
    c = s["comm"]
    sent_at = {}
    pts = []
    for line in open(os.path.join(d, "metrics.jsonl")):
        r = json.loads(line)
        if "comm_sent_bytes" in r:
            sent_at[r["step"]] = r["comm_sent_bytes"]
        if "val_loss" in r:
            pts.append((r["step"], r["val_loss"]))
    curves[m] = [(sent_at.get(step, 0), loss) for step, loss in pts]
    comp = c.get("compression") or {}
    bits = comp.get("wire_bits_per_kept_element") if comp.get("compressed") else None
    dens = comp.get("density") if comp.get("compressed") else None
    rows.append((m, s["final_val_loss"], s["final_train_loss"], c["sent_bytes"],
                 c["ratio_vs_ddp_fp32"], bits, dens, s["tokens"], s["workers"]))
    with open(os.path.join(out, f"curve-{m}.dat"), "w") as f:
        f.write(f"# cumulative_sent_bytes val_loss ({m})\n")
        for b, l in curves[m]:
            f.write(f"{max(b, 1)} {l}\n")

def fmt_bytes(b):
    for unit, div in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if b >= div:
            return f"{b / div:.2f} {unit}"
    return f"{b:.0f} B"

lines = ["| method | final val loss | final train loss | sent per worker | DDP fp32 / sent | "
         "bits per kept element | density | tokens | workers |",
         "|---|---|---|---|---|---|---|---|---|"]
for m, val, train, sent, ratio, bits, dens, tok, w in rows:
    lines.append(f"| {m} | {val:.4f} | {train:.4f} | {fmt_bytes(sent)} | "
                 f"{'-' if ratio is None else f'{ratio:.1f}x'} | "
                 f"{'32 (dense fp32)' if bits is None else f'{bits:.2f}'} | "
                 f"{'1' if dens is None else f'{dens:.4f}'} | {tok} | {w} |")
table = "\n".join(lines)
open(os.path.join(out, "results.md"), "w").write(table + "\n")
print(table)
PY

{
  echo "set terminal pngcairo size 900,560 font 'sans,11'"
  echo "set output '$OUT/loss-vs-bytes.png'"
  echo "set title 'Validation loss vs bytes sent per worker ($WORKERS workers, equal tokens)'"
  echo "set xlabel 'cumulative bytes sent per worker (log scale)'"
  echo "set ylabel 'validation loss (nats/byte)'"
  echo "set logscale x"
  echo "set key top right"
  echo "set grid"
  printf "plot "
  sep=""
  for method in $METHODS; do
    printf "%s'%s/curve-%s.dat' using 1:2 with linespoints title '%s'" "$sep" "$OUT" "$method" "$method"
    sep=", "
  done
  echo
} | gnuplot
echo "table: $OUT/results.md; plot: $OUT/loss-vs-bytes.png"
