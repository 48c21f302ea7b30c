#!/usr/bin/env bash
# Multi-rank CUDA training without a GPU: `mpirun -np 2|4 loco train` with backend "cuda" on the
# emulator build (kernels as fibers, cudart/cuBLASLt stand-ins, the NCCL stand-in over MPI:
# tests/emu/), each case beside the same run on the CPU backend of the same binary. Checks:
#  - losses per step within bf16 tolerance of the CPU run's;
#  - θ_global agreed on every rank after every sync (the trainer stops otherwise; each sync's
#    metrics record carries the agreed fingerprint);
#  - the communication report's model-traffic calls and bytes equal the CPU run's;
#  - the NCCL stand-in's call counts: the model traffic went through NCCL (or, with
#    outer.transport "mpi", that no NCCL communicator was made at all);
#  - bad launches: exit 2, the same message on every rank, nothing written.
# Usage: tests/emu/multi_rank.sh EMU_BUILD_DIR   (prints one line per check, ends with
# "N passed, M failed"; exit 1 when any failed)
set -uo pipefail
BUILD=$(cd "${1:?usage: multi_rank.sh EMU_BUILD_DIR}" && pwd)
LOCO=$BUILD/loco
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
[[ -x $LOCO ]] || { echo "no $LOCO (build the emulator: scripts/emu-check.sh --multi-rank)"; exit 1; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
WORK=$(mktemp -d /tmp/loco-emu-mr.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
passed=0 failed=0
ok() { echo "  ok   $*"; passed=$((passed + 1)); }
bad() { echo "  FAIL $*"; failed=$((failed + 1)); }

# A model small enough for the emulator (107k parameters, head_dim 16), 8 steps, H = 4.
SMALL=(--set model.d_model=64 --set model.n_layers=2 --set model.n_heads=4
       --set model.n_kv_heads=2 --set model.d_ff=128 --set model.max_seq_len=32
       --set training.seq_len=32 --set training.micro_batch=2 --set training.steps=8
       --set training.eval_interval=0 --set training.eval_batches=1 --set training.log_interval=4
       --set schedule.warmup_steps=2 --set checkpoint.interval=0)
DILOCO=(--set distributed.outer.interval=4)

run() {  # run NAME NP DEVICES BACKEND CONFIG ARGS... -> $WORK/NAME-BACKEND/{out,log,nccl}
  local name=$1 np=$2 devices=$3 backend=$4 config=$5
  shift 5
  local dir=$WORK/$name-$backend
  mkdir -p "$dir/nccl"
  LOCO_EMU_DEVICES=$devices LOCO_NCCL_STANDIN_LOG=$dir/nccl timeout 600 \
    mpirun -np "$np" --oversubscribe --bind-to none -x LOCO_EMU_DEVICES -x LOCO_NCCL_STANDIN_LOG \
    -x OMP_NUM_THREADS "$LOCO" train "configs/$config" --set backend="$backend" "${SMALL[@]}" \
    "$@" --out "$dir/out" >"$dir/log" 2>&1
  echo $? >"$dir/rc"
}

# compare NAME NP EXPECT [BYTES]: CUDA run vs CPU run, and the stand-in's counts. EXPECT: what the
# NCCL path must have carried, per rank: "replica" (every step's gradient all-reduce), "cross"
# (every outer sync's collective), "both", or "none" (no NCCL communicator at all).
compare() {
  local name=$1 np=$2 expect=$3 bytes=${4:-exact}
  python3 - "$WORK/$name-cuda" "$WORK/$name-cpu" "$np" "$expect" "$bytes" <<'PY'
import json, sys, os, glob
cuda, cpu, np_, expect, exact = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5] == "exact"
out = []
def check(cond, what): out.append(("ok  " if cond else "FAIL") + " " + what)
def rc(d): return int(open(d + "/rc").read())
if rc(cuda) != 0 or rc(cpu) != 0:
    check(False, f"runs exited {rc(cuda)} (cuda) / {rc(cpu)} (cpu); log tail:\n" +
          "".join(open(cuda + "/log").readlines()[-15:]))
    print("\n".join(out)); sys.exit()
def metrics(d): return [json.loads(l) for l in open(d + "/out/metrics.jsonl")]
mc, mp = metrics(cuda), metrics(cpu)
lc = [r["loss"] for r in mc if "loss" in r]
lp = [r["loss"] for r in mp if "loss" in r]
worst = max(abs(a - b) for a, b in zip(lc, lp))
check(len(lc) == len(lp) and worst < 0.03,
      f"losses within bf16 tolerance of the CPU run ({len(lc)} steps, max |diff| {worst:.4f} < 0.03)")
syncs_c = [r["outer"] for r in mc if "outer" in r] + [r["outer_earlier"] for r in mc if "outer_earlier" in r]
syncs_p = [r["outer"] for r in mp if "outer" in r] + [r["outer_earlier"] for r in mp if "outer_earlier" in r]
if syncs_p:
    check(len(syncs_c) == len(syncs_p) and all("global_fingerprint" in s for s in syncs_c),
          f"theta_global agreed on every rank after each of {len(syncs_c)} syncs")
sc = json.load(open(cuda + "/out/summary.json"))
sp = json.load(open(cpu + "/out/summary.json"))
kinds = ["all_reduce", "all_gather", "broadcast"]
# Rice-coded indices make a sparse payload's size depend on where the kept elements are, and
# bf16 activations move them a little: those cases compare the bytes within 2 %.
def close(a, b): return a == b if exact else abs(a - b) <= 0.02 * max(a, b)
same = all(sc["comm"]["by_kind"][k]["calls"] == sp["comm"]["by_kind"][k]["calls"] and
           all(close(sc["comm"]["by_kind"][k][f], sp["comm"]["by_kind"][k][f])
               for f in ("sent_bytes", "recv_bytes")) for k in kinds)
check(same, ("model-traffic calls and bytes equal the CPU run's: " if exact else
             "model-traffic calls equal, bytes within 2 % of the CPU run's (Rice-coded indices): ") +
      ", ".join(f'{k} {sc["comm"]["by_kind"][k]["calls"]}x/{sc["comm"]["by_kind"][k]["sent_bytes"]} B'
                f' (cpu {sp["comm"]["by_kind"][k]["sent_bytes"]} B)'
                for k in kinds if sc["comm"]["by_kind"][k]["calls"]))
launch = sc["launch"]
check(launch["backend"] == "cuda" and len(launch["ranks"]) == np_,
      f'launch: replica group {launch["replica_transport"]!r}, outer sync {launch["outer_transport"]!r}')
# The stand-in's counts, per rank.
logs = sorted(glob.glob(cuda + "/nccl/nccl-rank-*.json"))
counts = [json.load(open(f)) for f in logs]
steps = sc["steps"]
syncs = sc["comm"]["outer_syncs"]
params = sc["parameters"]
replica_calls = steps if expect in ("replica", "both") else 0
collective = "ncclAllGather" if sc["comm"].get("compression", {}).get("compressed") else "ncclAllReduce"
if expect == "none":
    check(all(not c["communicators"] for c in counts) and
          all(c["calls"].get("ncclAllReduce", 0) + c["calls"].get("ncclAllGather", 0) == 0 for c in counts),
          f"no NCCL communicator made on any rank (outer sync over MPI, staged through host memory)")
else:
    ok_all = len(counts) == np_
    detail = []
    for c in counts:
        ar = c["calls"].get("ncclAllReduce", 0)
        ag = c["calls"].get("ncclAllGather", 0)
        detail.append(f"allreduce {ar}, allgather {ag}")
        want_ar = replica_calls + (syncs if expect in ("cross", "both") and collective == "ncclAllReduce" else 0)
        want_ag = syncs if expect in ("cross", "both") and collective == "ncclAllGather" else 0
        ok_all &= ar == want_ar and ag == want_ag
        if replica_calls and collective == "ncclAllReduce" and expect == "replica":
            ok_all &= c["bytes"]["ncclAllReduce"] == steps * 4 * params
    check(ok_all, f"NCCL carried the model traffic ({steps} steps, {syncs} syncs): " + "; ".join(detail))
print("\n".join(out))
PY
}

case_pair() {  # case_pair NAME NP DEVICES EXPECT[:approx] CONFIG ARGS...
  local name=$1 np=$2 devices=$3 expect=${4%%:*} config=$5 bytes=exact
  [[ $4 == *:approx ]] && bytes=approx
  shift 5
  echo "== $name: mpirun -np $np, $devices emulated GPU(s), $config $*"
  run "$name" "$np" "$devices" cuda "$config" "$@"
  run "$name" "$np" "$devices" cpu "$config" "$@" --set distributed.outer.transport=auto
  while IFS= read -r line; do
    case $line in
      ok*) ok "${line#ok  }" ;;
      *) bad "${line#FAIL }" ;;
    esac
  done < <(compare "$name" "$np" "$expect" "$bytes")
}

T0=$SECONDS
case_pair ddp 2 2 replica tiny-ddp.json
case_pair diloco-nccl 2 2 cross tiny-diloco.json "${DILOCO[@]}"
case_pair diloco-mpi-shared-gpu 2 1 none tiny-diloco.json "${DILOCO[@]}" \
  --set distributed.outer.transport=mpi
case_pair sparseloco 2 2 cross:approx tiny-sparseloco.json "${DILOCO[@]}"
# Fixed-width indices: the payload size depends on k and the chunks only, so bytes are exact.
case_pair sparseloco-mpi-fixed-indices 2 2 none tiny-sparseloco.json "${DILOCO[@]}" \
  --set distributed.outer.transport=mpi --set distributed.compression.index_coding=fixed
case_pair muloco 2 2 cross tiny-muloco.json "${DILOCO[@]}"
case_pair replicas-2x2 4 4 both tiny-diloco.json "${DILOCO[@]}" --set distributed.replica_size=2
case_pair streaming 2 2 cross tiny-streaming.json "${DILOCO[@]}" \
  --set distributed.outer.overlap_steps=2

# Bad launches: exit 2, the same message on every rank, no run directory.
refused() {  # refused NAME NP DEVICES PATTERN ARGS...
  local name=$1 np=$2 devices=$3 pattern=$4
  shift 4
  local out=$WORK/$name
  LOCO_EMU_DEVICES=$devices timeout 120 mpirun -np "$np" --oversubscribe --bind-to none \
    -x LOCO_EMU_DEVICES "$LOCO" train "$@" "${SMALL[@]}" --out "$out" >"$WORK/$name.log" 2>&1
  local code=$?
  local ranks
  ranks=$(grep -c "^error: .*$pattern" "$WORK/$name.log")
  if [[ $code == 2 && $ranks == "$np" && ! -e $out ]]; then
    ok "$name: exit 2, all $np ranks say \"$pattern\", nothing written"
  else
    bad "$name: exit $code, $ranks of $np ranks matched \"$pattern\", run dir $([[ -e $out ]] && echo exists || echo absent)"
    tail -5 "$WORK/$name.log"
  fi
}
echo "== bad launches"
refused ddp-two-ranks-one-gpu 2 1 "ranks 0 and 1 (replica group 0) on GPU 0 of node 0.*Fix: start at most" \
  configs/tiny-ddp.json --set backend=cuda
refused diloco-nccl-shared-gpu 2 1 "outer-sync group 0.*outer.transport = \"mpi\"" \
  configs/tiny-diloco.json --set backend=cuda
refused no-gpu 2 0 "have no usable CUDA device" configs/tiny-ddp.json --set backend=cuda
# The config check runs on every rank; the lowest failing rank reports (config errors are
# identical everywhere), so expect one line.
LOCO_EMU_DEVICES=2 timeout 120 mpirun -np 2 --oversubscribe --bind-to none "$LOCO" train \
  configs/tiny-diloco.json --set distributed.outer.transport=nccl "${SMALL[@]}" \
  --out "$WORK/nccl-on-cpu" >"$WORK/nccl-on-cpu.log" 2>&1
code=$?
if [[ $code == 2 ]] && grep -q 'transport = "nccl": NCCL carries device memory and needs backend "cuda"' \
  "$WORK/nccl-on-cpu.log" && [[ ! -e $WORK/nccl-on-cpu ]]; then
  ok "outer.transport nccl with backend cpu: exit 2, names the key, nothing written"
else
  bad "outer.transport nccl with backend cpu: exit $code"
fi

echo "emulated multi-rank checks took $((SECONDS - T0)) s"
echo "$passed passed, $failed failed"
((failed == 0))
