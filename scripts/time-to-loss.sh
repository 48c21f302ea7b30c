#!/usr/bin/env bash
# Time to a validation loss over a real, rate-limited link: DDP, DiLoCo, SparseLoCo and
# streaming DiLoCo on an emulated cluster (scripts/netns-cluster.sh: network namespaces, tc
# rate limits, Open MPI over TCP between the nodes), each next to what loco's simulated link
# (distributed.link) predicts for the same run.
#
# For every method and rate two runs, back to back (so they see the same load on the machine):
#   real  the run over links limited to RATE (netns-cluster.sh --rate RATE);
#   sim   the same run, same cluster, links not limited (about 1 Gbit/s through the kernel),
#         with distributed.link.bandwidth_mbps = RATE and latency 0 (the emulated links add
#         none). DDP rejects distributed.link (it has no outer-sync group): its prediction is
#         one unlimited run plus, per step, the ring all-reduce time of the gradients at RATE
#         (scripts/time_to_loss.py, which also writes the table).
# The prediction runs on the cluster, not on one host, on purpose: the compute must match.
# (With the kernel's autogroup scheduling each emulated node's ranks form a scheduling group of
# their own, while the ranks of a one-host mpirun share one; on a loaded machine the cluster
# then gets a larger CPU share, up to 2x faster steps here. See docs/results.md.)
#
# Needs root (netns-cluster.sh). Run as: scripts/time-to-loss.sh OUTDIR [-- --set KEY=VALUE ...]
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

usage() {
  cat <<EOF
Usage: $0 [OPTIONS] OUTDIR [-- EXTRA_LOCO_ARGS...]

Runs each method over real rate-limited links on an emulated cluster and its simulated-link
prediction, then writes OUTDIR/report.md and OUTDIR/report.json (scripts/time_to_loss.py).
OUTDIR must not exist yet. Run as root.

Options:
  --methods "LIST"       methods, any of ddp diloco sparseloco streaming
                         (default: "ddp diloco sparseloco streaming"; configs/tiny-<m>.json)
  --rates "LIST"         node link rates in tc's units (default: "100mbit 10mbit")
  -n, --nodes N          emulated nodes (default 4), one DiLoCo replica each
  -r, --ranks-per-node R ranks per node (default 1); replica_size = R
  --steps N              steps of every run (default 300; one cosine schedule for all)
  --interval H           outer interval of the DiLoCo methods (default 10)
  --eval-interval N      validate every N steps (default 10: a multiple of H)
  --target LOSS          the validation loss to reach (default 2.2; see docs/results.md)
  --algorithm ring|default
                         Open MPI's non-blocking all-reduce: ring (--mca
                         coll_libnbc_iallreduce_algorithm ring; what the ring formulas and
                         NCCL assume) or Open MPI's default choice (default: ring)
  --no-predict           only the runs over the real links
  --repeat K             run the whole set K times (default 1), as OUTDIR/rep<i>/
  --run-limit S          time limit of each run, seconds (default 900)
  --loco PATH            the loco binary (default build/loco)
  -h, --help             this text

The model is the tiny Llama shrunk to d_model 64, 2 layers, d_ff 192 (131,392 parameters,
0.53 MB per fp32 all-reduce), so that DDP is communication-bound at 10 Mbit/s on a 2-core
machine; EXTRA_LOCO_ARGS (e.g. --set model.d_model=128) go to every run after these.
Exit status: 0 when every run finished, 1 when one failed or hit its limit (the report still
covers the others), 2 for bad input.
EOF
}

die() {
  echo "time-to-loss: error: $*" >&2
  exit 2
}

methods="ddp diloco sparseloco streaming"
rates="100mbit 10mbit"
nodes=4
ranks_per_node=1
steps=300
interval=10
eval_interval=10
target=2.2
algorithm=ring
predict=1
repeat=1
run_limit=900
loco=build/loco
need_value() { [[ $# -ge 2 ]] || die "$1 needs a value (see --help)"; }
while [[ $# -gt 0 ]]; do
  case $1 in
    --methods) need_value "$@"; methods=$2; shift 2 ;;
    --rates) need_value "$@"; rates=$2; shift 2 ;;
    -n | --nodes) need_value "$@"; nodes=$2; shift 2 ;;
    -r | --ranks-per-node) need_value "$@"; ranks_per_node=$2; shift 2 ;;
    --steps) need_value "$@"; steps=$2; shift 2 ;;
    --interval) need_value "$@"; interval=$2; shift 2 ;;
    --eval-interval) need_value "$@"; eval_interval=$2; shift 2 ;;
    --target) need_value "$@"; target=$2; shift 2 ;;
    --algorithm) need_value "$@"; algorithm=$2; shift 2 ;;
    --no-predict) predict=0; shift ;;
    --repeat) need_value "$@"; repeat=$2; shift 2 ;;
    --run-limit) need_value "$@"; run_limit=$2; shift 2 ;;
    --loco) need_value "$@"; loco=$2; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    --) die "OUTDIR must come before -- (see --help)" ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) break ;;
  esac
done
[[ $# -ge 1 ]] || die "no OUTDIR given (see --help)"
out=$1
shift
if [[ $# -gt 0 ]]; then
  [[ $1 == -- ]] || die "unexpected argument '$1' after OUTDIR (extra loco arguments follow --)"
  shift
fi
extra=("$@")

is_count() { [[ $1 =~ ^[1-9][0-9]*$ ]]; }
for v in nodes ranks_per_node steps interval eval_interval repeat run_limit; do
  is_count "${!v}" || die "--${v//_/-} ${!v}: want a whole number >= 1"
done
((nodes >= 2)) || die "--nodes $nodes: want at least 2 (a link needs two ends)"
[[ $target =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "--target $target: want a loss, e.g. 2.2"
[[ $algorithm == ring || $algorithm == default ]] || die "--algorithm $algorithm: want ring or default"
for m in $methods; do
  case $m in ddp | diloco | sparseloco | streaming) ;; *) die "--methods: unknown method '$m' (want ddp, diloco, sparseloco, streaming)" ;; esac
done
[[ -n ${methods// /} ]] || die "--methods is empty"
for r in $rates; do
  [[ $r =~ ^[0-9]+(\.[0-9]+)?[kmg]bit$ ]] || die "--rates: '$r': want a number and kbit, mbit or gbit, e.g. 10mbit"
done
[[ -n ${rates// /} ]] || die "--rates is empty"
[[ $(id -u) -eq 0 ]] || die "must run as root (scripts/netns-cluster.sh creates network namespaces)"
[[ -x $loco ]] || die "$loco: not an executable (build first: LOCO_CPU_ONLY=1 scripts/build.sh, or --loco PATH)"
[[ ! -e $out ]] || die "$out already exists: choose a new OUTDIR (runs are never mixed or overwritten)"
loco=$(realpath "$loco")

# Mbit/s of a tc rate, for distributed.link.bandwidth_mbps.
mbps() {
  python3 -c 'import re,sys; m=re.fullmatch(r"([0-9.]+)([kmg])bit", sys.argv[1]); print(float(m[1])*{"k":1e-3,"m":1,"g":1e3}[m[2]])' "$1"
}

model_args=(--set model.d_model=64 --set model.n_layers=2 --set model.d_ff=192)
common_args=(
  --set training.steps="$steps" --set training.eval_interval="$eval_interval"
  --set training.eval_batches=4 --set training.log_interval=50
  --set distributed.replica_size="$ranks_per_node" --set distributed.timeout_s=600
)
cluster_args=(-n "$nodes" -r "$ranks_per_node" -t "$run_limit" -x OMP_NUM_THREADS=1)
[[ $algorithm == ring ]] && cluster_args+=(--mca coll_libnbc_iallreduce_algorithm ring)

mkdir -p "$out"
out=$(realpath "$out")
runs_tsv=$out/runs.tsv
{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "cpu: $(lscpu | sed -n 's/^Model name: *//p') ($(nproc) cores)"
  echo "kernel: $(uname -r)"
  echo "open mpi: $(mpirun --version 2>&1 | head -1)"
  echo "nodes: $nodes x $ranks_per_node rank(s); rates: $rates; algorithm: $algorithm"
  echo "steps: $steps, outer interval: $interval, eval every $eval_interval; target: $target"
  echo "loco: $loco ($(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown))"
  echo "extra: ${extra[*]:-}"
} >"$out/machine.txt"
printf 'rep\tmethod\trate\tkind\talgorithm\tdir\trc\tseconds\tload_before\tload_after\n' >"$runs_tsv"

failures=0
# One run on the cluster: run REP METHOD RATE KIND RUN_DIR CLUSTER_RATE [extra loco args].
run() {
  local rep=$1 method=$2 rate=$3 kind=$4 dir=$5 cluster_rate=$6
  shift 6
  local config=configs/tiny-$method.json
  local -a method_args=()
  [[ $method != ddp ]] && method_args=(--set distributed.outer.interval="$interval")
  local -a rate_args=()
  [[ -n $cluster_rate ]] && rate_args=(--rate "$cluster_rate")
  local load_before load_after rc=0 t0
  load_before=$(cut -d' ' -f1 /proc/loadavg)
  t0=$(date +%s.%N)
  echo "time-to-loss: rep $rep: $method, $kind at $rate (links ${cluster_rate:-unlimited})" >&2
  scripts/netns-cluster.sh "${cluster_args[@]}" "${rate_args[@]}" -- \
    "$loco" train "$config" --out "$dir" "${model_args[@]}" "${common_args[@]}" \
    "${method_args[@]}" "$@" "${extra[@]}" >"$dir.log" 2>&1 || rc=$?
  load_after=$(cut -d' ' -f1 /proc/loadavg)
  local seconds
  seconds=$(python3 -c "import sys,time; print(f'{time.time()-float(sys.argv[1]):.1f}')" "$t0")
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$rep" "$method" "$rate" "$kind" \
    "$algorithm" "${dir#"$out"/}" "$rc" "$seconds" "$load_before" "$load_after" >>"$runs_tsv"
  if [[ $rc -ne 0 ]]; then
    failures=$((failures + 1))
    echo "time-to-loss: $method $kind at $rate: exit $rc (see $dir.log)" >&2
  fi
}

for ((rep = 1; rep <= repeat; rep++)); do
  dir=$out/rep$rep
  mkdir -p "$dir"
  for method in $methods; do
    # DDP's prediction needs one run on unlimited links (the same for every rate).
    if [[ $method == ddp && $predict == 1 ]]; then
      run "$rep" ddp unlimited sim "$dir/ddp-unlimited-sim" ""
    fi
    for rate in $rates; do
      run "$rep" "$method" "$rate" real "$dir/$method-$rate-real" "$rate"
      if [[ $method != ddp && $predict == 1 ]]; then
        run "$rep" "$method" "$rate" sim "$dir/$method-$rate-sim" "" \
          --set distributed.link.bandwidth_mbps="$(mbps "$rate")" \
          --set distributed.link.latency_ms=0
      fi
    done
  done
done

python3 scripts/time_to_loss.py "$out" --target "$target" --markdown "$out/report.md" \
  --json "$out/report.json"
cat "$out/report.md"
((failures == 0)) || {
  echo "time-to-loss: $failures run(s) failed or hit --run-limit (rc in $runs_tsv)" >&2
  exit 1
}
