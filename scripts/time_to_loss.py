#!/usr/bin/env python3
"""Time-to-loss table of scripts/time-to-loss.sh: every run over a real link next to the
simulated link's prediction for it.

    python3 scripts/time_to_loss.py OUTDIR [OUTDIR ...] --target 2.2 [--markdown F] [--json F]

Each OUTDIR holds runs.tsv (one line per run: rep, method, rate, kind real|sim, algorithm,
run directory, exit status, ...) and the run directories (metrics.jsonl, summary.json).

Per run, from rank 0's files:
  time to target  elapsed_s of the first validation at or below the target (the step record
                  of that step, written after the validation: it includes it)
  median step     median of step_seconds over all steps
  blocked         comm.comm_seconds (model collectives: time inside the calls) plus
                  comm.control.seconds (host collectives: loss averages, stop flags, sync
                  points), first to last step
Predictions:
  DiLoCo methods  the "sim" run of the same method and rate: links unlimited,
                  distributed.link at the rate, latency 0
  DDP             the "sim" run on unlimited links plus, every step, what the ring all-reduce
                  of the fp32 gradients takes at the rate beyond what it took there:
                  max(0, 2(K-1)/K * 4 * parameters * 8 / rate - comm_seconds / steps)
Ratio = measured / predicted. Exit status 2 for bad input.
"""
import argparse
import csv
import json
import os
import re
import statistics
import sys


class InputError(Exception):
    pass


def rate_mbps(rate):
    """'10mbit' -> 10.0; None for 'unlimited'."""
    m = re.fullmatch(r"([0-9.]+)([kmg])bit", rate)
    if not m:
        return None
    return float(m[1]) * {"k": 1e-3, "m": 1.0, "g": 1e3}[m[2]]


def read_run(path):
    """The figures of one run directory; missing files give None fields."""
    run = {"dir": path, "val": [], "step_seconds": [], "elapsed": {}, "summary": None}
    metrics = os.path.join(path, "metrics.jsonl")
    if not os.path.exists(metrics):
        return run
    with open(metrics) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(f"{metrics}:{n}: not JSON ({e})")
            if "val_loss" in rec:
                run["val"].append((rec["step"], rec["val_loss"]))
            if "step_seconds" in rec:
                run["step_seconds"].append(rec["step_seconds"])
                run["elapsed"][rec["step"]] = rec["elapsed_s"]
    summary = os.path.join(path, "summary.json")
    if os.path.exists(summary):
        with open(summary) as f:
            run["summary"] = json.load(f)
    return run


def crossing(run, target):
    """(step, elapsed seconds) of the first validation at or below target, else None."""
    for step, loss in run["val"]:
        if loss <= target:
            if step not in run["elapsed"]:
                raise InputError(f"{run['dir']}: validation at step {step} has no step record")
            return step, run["elapsed"][step]
    return None


def blocked_seconds(summary):
    comm = summary["comm"]
    control = comm.get("control", {}).get("seconds", 0.0)
    return comm["comm_seconds"] + control


def figures(run, target):
    """Measured figures of a run: a dict, fields None where the run did not give them."""
    s = run["summary"]
    cross = crossing(run, target)
    loop = max(run["elapsed"].values()) if run["elapsed"] else None
    return {
        "step_to_target": cross[0] if cross else None,
        "time_to_target": cross[1] if cross else None,
        "median_step": statistics.median(run["step_seconds"]) if run["step_seconds"] else None,
        "blocked": blocked_seconds(s) if s else None,
        "loop_seconds": loop,
        "steps": len(run["step_seconds"]),
        "final_val_loss": run["val"][-1][1] if run["val"] else None,
        "sent_bytes": s["comm"]["sent_bytes"] if s else None,
        "finished": s is not None and not s.get("stopped_early", False),
    }


def ddp_prediction(unlimited, target, mbps):
    """DDP at `mbps` from its run on unlimited links and the ring formula."""
    s = unlimited["summary"]
    if s is None:
        return None
    k = s["workers"]
    params = s["parameters"]
    steps = s["steps"]
    ring = 2.0 * (k - 1) / k * 4.0 * params * 8.0 / (mbps * 1e6)
    measured_per_step = s["comm"]["comm_seconds"] / steps
    extra = max(0.0, ring - measured_per_step)
    f = figures(unlimited, target)
    cross = crossing(unlimited, target)
    return {
        "step_to_target": f["step_to_target"],
        "time_to_target": cross[1] + cross[0] * extra if cross else None,
        "median_step": f["median_step"] + extra if f["median_step"] is not None else None,
        "blocked": f["blocked"] + steps * extra,
        "loop_seconds": f["loop_seconds"] + steps * extra,
        "ring_seconds_per_step": ring,
        "how": "unlimited-link run + ring formula",
    }


def ratio(a, b):
    if a is None or b is None or b <= 0:
        return None
    return a / b


def load_rows(outdirs):
    rows = []
    for d in outdirs:
        tsv = os.path.join(d, "runs.tsv")
        if not os.path.exists(tsv):
            raise InputError(f"{d}: no runs.tsv (not an OUTDIR of scripts/time-to-loss.sh)")
        with open(tsv) as f:
            for r in csv.DictReader(f, delimiter="\t"):
                missing = {"rep", "method", "rate", "kind", "algorithm", "dir", "rc"} - set(r)
                if missing:
                    raise InputError(f"{tsv}: missing column(s) {', '.join(sorted(missing))}")
                r["path"] = os.path.join(d, r["dir"])
                r["outdir"] = d
                rows.append(r)
    return rows


def analyse(outdirs, target):
    rows = load_rows(outdirs)
    runs = {r["path"]: read_run(r["path"]) for r in rows}
    out = []
    for r in rows:
        if r["kind"] != "real":
            continue
        real = runs[r["path"]]
        entry = {
            "outdir": r["outdir"],
            "rep": r["rep"],
            "method": r["method"],
            "rate": r["rate"],
            "algorithm": r["algorithm"],
            "rc": int(r["rc"]),
            "load": f"{r.get('load_before', '?')}-{r.get('load_after', '?')}",
            "measured": figures(real, target),
            "predicted": None,
        }
        same = [
            q for q in rows
            if q["outdir"] == r["outdir"] and q["rep"] == r["rep"] and q["kind"] == "sim"
            and q["method"] == r["method"]
        ]
        if r["method"] == "ddp":
            unl = [q for q in same if q["rate"] == "unlimited"]
            mbps = rate_mbps(r["rate"])
            if unl and mbps:
                entry["predicted"] = ddp_prediction(runs[unl[0]["path"]], target, mbps)
        else:
            sim = [q for q in same if q["rate"] == r["rate"]]
            if sim:
                entry["predicted"] = figures(runs[sim[0]["path"]], target)
                entry["predicted"]["how"] = "simulated link (distributed.link)"
        m, p = entry["measured"], entry["predicted"] or {}
        entry["ratio"] = {
            k: ratio(m.get(k), p.get(k)) for k in ("time_to_target", "median_step", "blocked")
        }
        if p and m["step_to_target"] != p.get("step_to_target"):
            entry["warning"] = (
                f"the target is crossed at step {m['step_to_target']} over the real link and "
                f"{p.get('step_to_target')} in the prediction run: the losses should be the same")
        out.append(entry)
    return out


def cell(values, fmt):
    vals = [v for v in values if v is not None]
    if not vals:
        return "—"
    if len(vals) < len(values):
        return fmt(statistics.mean(vals)) + f" ({len(values) - len(vals)} missing)"
    if len(vals) == 1:
        return fmt(vals[0])
    return f"{fmt(statistics.mean(vals))} ({fmt(min(vals))}–{fmt(max(vals))})"


def markdown(entries, target):
    sec = lambda v: f"{v:.1f} s"
    ms = lambda v: f"{v * 1e3:.0f} ms"
    x = lambda v: f"{v:.2f}"
    groups = {}
    for e in entries:
        groups.setdefault((e["algorithm"], e["rate"], e["method"]), []).append(e)
    order = {"ddp": 0, "diloco": 1, "sparseloco": 2, "streaming": 3}
    keys = sorted(groups, key=lambda k: (k[0], -(rate_mbps(k[1]) or 0), order.get(k[2], 9)))
    lines = [
        f"Target validation loss {target}. Mean over runs, (min–max) where repeated. "
        "\"pred\": the simulated link's prediction; \"ratio\": measured / predicted.",
        "",
        "| all-reduce | link | method | runs | step at target | time to target | pred | ratio "
        "| median step | pred | ratio | blocked in comm. | share of run | pred | ratio |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
        "| ---: | ---: | ---: |",
    ]
    for k in keys:
        g = groups[k]
        M = lambda f: [e["measured"][f] for e in g]
        P = lambda f: [(e["predicted"] or {}).get(f) for e in g]
        R = lambda f: [e["ratio"][f] for e in g]
        share = [
            e["measured"]["blocked"] / e["measured"]["loop_seconds"]
            if e["measured"]["blocked"] is not None and e["measured"]["loop_seconds"] else None
            for e in g
        ]
        steps = sorted({e["measured"]["step_to_target"] for e in g}, key=lambda v: v or 0)
        step_cell = ", ".join("not reached" if s is None else str(s) for s in steps)
        lines.append(
            f"| {k[0]} | {k[1]} | {k[2]} | {len(g)} | {step_cell} | {cell(M('time_to_target'), sec)} "
            f"| {cell(P('time_to_target'), sec)} | {cell(R('time_to_target'), x)} "
            f"| {cell(M('median_step'), ms)} | {cell(P('median_step'), ms)} "
            f"| {cell(R('median_step'), x)} | {cell(M('blocked'), sec)} "
            f"| {cell(share, lambda v: f'{100 * v:.0f} %')} | {cell(P('blocked'), sec)} "
            f"| {cell(R('blocked'), x)} |")
    notes = [e for e in entries if e.get("warning") or e["rc"] != 0]
    for e in notes:
        what = e.get("warning") or f"exit status {e['rc']}"
        lines.append(f"\n- {e['outdir']} rep {e['rep']} {e['method']} {e['rate']}: {what}")
    return "\n".join(lines) + "\n"


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("outdirs", nargs="+", help="OUTDIRs of scripts/time-to-loss.sh")
    ap.add_argument("--target", type=float, required=True, help="validation loss to reach")
    ap.add_argument("--markdown", help="write the table here (default: stdout)")
    ap.add_argument("--json", help="write every run's figures here")
    args = ap.parse_args(argv)
    try:
        entries = analyse(args.outdirs, args.target)
    except (InputError, OSError, json.JSONDecodeError, KeyError) as e:
        print(f"time_to_loss: error: {e}", file=sys.stderr)
        return 2
    if not entries:
        print("time_to_loss: error: no runs over a real link in " + ", ".join(args.outdirs),
              file=sys.stderr)
        return 2
    table = markdown(entries, args.target)
    if args.markdown:
        with open(args.markdown + ".tmp", "w") as f:
            f.write(table)
        os.replace(args.markdown + ".tmp", args.markdown)
    else:
        sys.stdout.write(table)
    if args.json:
        with open(args.json + ".tmp", "w") as f:
            json.dump({"target": args.target, "runs": entries}, f, indent=1)
        os.replace(args.json + ".tmp", args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
