#!/usr/bin/env python3
"""Sweeps of loco runs: a grid of config settings x seeds per method, run a few at a time,
resumable, summarised into one table (mean +- std over seeds, the best setting per method)
and two plots (validation loss against cumulative bytes sent per worker with the Pareto front
of the methods' best settings; validation loss against step).

    scripts/sweep.py run    SWEEP.json [--jobs N] [--out DIR] [--loco PATH]
    scripts/sweep.py report SWEEP.json [--out DIR]
    scripts/sweep.py plan   SWEEP.json            # list the cells, run nothing

SWEEP.json (every key but "methods" optional):

    {
      "out": "runs/sweep",              # where the cells go (--out overrides)
      "workers": 4,                     # MPI ranks per run (a method may override)
      "jobs": 1,                        # runs at a time (--jobs overrides)
      "seeds": [1, 2, 3],               # every grid point with every seed, or
                                        # {"tune": [1], "final": [1, 2, 3]}: the grid with the
                                        # tune seeds, then the best point per method with the
                                        # final seeds
      "seed_key": "training.seed",
      "set": {"training.steps": 400},   # --set for every run
      "methods": [
        {"name": "ddp", "config": "configs/tiny-ddp.json", "workers": 4,
         "set": {...}, "grid": {"optimizer.lr": [0.001, 0.003]}}
      ]
    }

A cell is one run: OUT/<method>/<point>/seed-<s>/ (loco's run directory) with its log beside it
(seed-<s>.log). A cell is finished when its summary.json says it ran every planned step; `run`
skips finished cells, so an interrupted sweep continues where it stopped (an unfinished cell is
removed and run again). "Best" is the lowest mean final validation loss over the seeds run.
Standard deviations are the sample standard deviation (n - 1) over seeds.

Python 3 standard library only; the plots need gnuplot (scripts/install-deps.sh), without it
the data and gnuplot scripts are still written.
"""
import argparse
import itertools
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time

# ------------------------------------------------------------------ the definition


class SweepError(Exception):
    pass


def load_definition(path):
    try:
        with open(path) as f:
            d = json.load(f)
    except OSError as e:
        raise SweepError(f"{path}: cannot read: {e.strerror}")
    except json.JSONDecodeError as e:
        raise SweepError(f"{path}: not valid JSON: {e}")
    if not isinstance(d, dict) or not isinstance(d.get("methods"), list) or not d["methods"]:
        raise SweepError(f'{path}: needs "methods": a non-empty list')
    known = {"out", "workers", "jobs", "seeds", "seed_key", "set", "methods", "description"}
    for k in d:
        if k not in known:
            raise SweepError(f"{path}: unknown key {k!r} (known: {', '.join(sorted(known))})")
    seeds = d.get("seeds", [1])
    if isinstance(seeds, list):
        tune, final = seeds, seeds
    elif isinstance(seeds, dict) and set(seeds) == {"tune", "final"}:
        tune, final = seeds["tune"], seeds["final"]
    else:
        raise SweepError(f'{path}: "seeds" is a list or {{"tune": [...], "final": [...]}}')
    for s in tune + final:
        if not isinstance(s, int) or isinstance(s, bool):
            raise SweepError(f"{path}: seeds must be integers, got {s!r}")
    if not tune or not final:
        raise SweepError(f"{path}: no seeds")
    names = set()
    for i, m in enumerate(d["methods"]):
        where = f"{path}: methods[{i}]"
        if not isinstance(m, dict) or "name" not in m or "config" not in m:
            raise SweepError(f'{where}: needs "name" and "config"')
        for k in m:
            if k not in {"name", "config", "set", "grid", "workers", "description"}:
                raise SweepError(f"{where}: unknown key {k!r}")
        if m["name"] in names or not m["name"] or "/" in m["name"]:
            raise SweepError(f"{where}: name {m['name']!r} is empty, has a '/' or is used twice")
        names.add(m["name"])
        for k, values in m.get("grid", {}).items():
            if not isinstance(values, list) or not values:
                raise SweepError(f"{where}: grid {k!r} must be a non-empty list")
    return {
        "out": d.get("out", "runs/sweep"),
        "workers": int(d.get("workers", 1)),
        "jobs": int(d.get("jobs", 1)),
        "tune_seeds": tune,
        "final_seeds": final,
        "two_stage": isinstance(seeds, dict),
        "seed_key": d.get("seed_key", "training.seed"),
        "set": d.get("set", {}),
        "methods": d["methods"],
        "description": d.get("description", ""),
        "path": path,
    }


def value_text(v):
    return json.dumps(v) if not isinstance(v, str) else v


def grid_points(method):
    """The grid of one method: a list of {key: value} in a fixed order."""
    grid = method.get("grid", {})
    keys = list(grid)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]


def point_name(point):
    if not point:
        return "default"
    return ",".join(f"{k}={value_text(v)}" for k, v in point.items()).replace("/", "_")


class Cell:
    def __init__(self, sweep, method, point, seed, out):
        self.method = method
        self.point = point
        self.seed = seed
        self.dir = os.path.join(out, method["name"], point_name(point), f"seed-{seed}")
        self.log = self.dir + ".log"
        self.timing = self.dir + ".time.json"  # the cell's measured wall time, for the cost
        self.workers = int(method.get("workers", sweep["workers"]))
        settings = dict(sweep["set"])
        settings.update(method.get("set", {}))
        settings.update(point)
        settings[sweep["seed_key"]] = seed
        self.settings = settings

    def label(self):
        return f"{self.method['name']} {point_name(self.point)} seed {self.seed}"

    def summary(self):
        try:
            with open(os.path.join(self.dir, "summary.json")) as f:
                return json.load(f)
        except (OSError, json.JSONDecodeError):
            return None

    def finished(self):
        s = self.summary()
        return bool(s) and not s.get("stopped_early") and s.get("steps") == s.get("steps_planned")

    def command(self, loco):
        run = [loco, "train", self.method["config"], "--out", self.dir]
        for k, v in self.settings.items():
            run += ["--set", f"{k}={json.dumps(v)}"]
        if self.workers == 1:
            return run
        return ["mpirun", "-np", str(self.workers), "--oversubscribe", "--bind-to", "none",
                "-x", "OMP_NUM_THREADS=1"] + run


def plan_cells(sweep, out, stage):
    """stage "tune": the grid x tune seeds; "final": each method's best point x final seeds
    (only for methods whose tune cells are all finished)."""
    cells = []
    for m in sweep["methods"]:
        points = grid_points(m)
        if stage == "tune":
            cells += [Cell(sweep, m, p, s, out) for p in points for s in sweep["tune_seeds"]]
            continue
        tune = [Cell(sweep, m, p, s, out) for p in points for s in sweep["tune_seeds"]]
        if not all(c.finished() for c in tune):
            continue
        best = best_point(m, points, tune)
        cells += [Cell(sweep, m, best, s, out) for s in sweep["final_seeds"]
                  if s not in sweep["tune_seeds"]]
    # Seed by seed: an interrupted sweep has every method and point at the same number of seeds.
    order = {s: i for i, s in enumerate(sweep["tune_seeds"] + sweep["final_seeds"])}
    return sorted(cells, key=lambda c: order[c.seed])  # stable: methods and points in order


def final_val(summary):
    v = summary.get("final_val_loss")
    return float(v) if v is not None else math.inf


def best_point(method, points, cells):
    """The point with the lowest mean final validation loss over its finished cells."""
    by_point = {}
    for c in cells:
        s = c.summary()
        if s and c.finished():
            by_point.setdefault(point_name(c.point), []).append(final_val(s))
    scored = [(statistics.mean(by_point[point_name(p)]), i, p)
              for i, p in enumerate(points) if point_name(p) in by_point]
    return min(scored)[2] if scored else points[0]


# ------------------------------------------------------------------ running


def fmt_duration(s):
    s = int(round(s))
    if s >= 3600:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


class Progress:
    """Cells done / planned and an ETA from the mean time of the cells run so far."""

    def __init__(self, total, done, jobs):
        self.total, self.done, self.jobs = total, done, jobs
        self.times = []

    def line(self, text, seconds=None):
        if seconds is not None:
            self.times.append(seconds)
        left = self.total - self.done
        eta = ""
        if self.times and left > 0:
            eta = f", ETA {fmt_duration(statistics.mean(self.times) * left / self.jobs)}"
        print(f"[{self.done}/{self.total} cells{eta}] {text}", flush=True)


def run_cells(cells, loco, jobs, progress, env):
    """Runs the unfinished cells, `jobs` at a time. Returns the labels of failed cells."""
    pending = [c for c in cells if not c.finished()]
    running, failed = [], []
    while pending or running:
        while pending and len(running) < jobs:
            c = pending.pop(0)
            if os.path.exists(c.dir):
                shutil.rmtree(c.dir)  # unfinished: an interrupted or failed earlier try
                print(f"  {c.label()}: removed the unfinished run {c.dir}", flush=True)
            os.makedirs(os.path.dirname(c.dir), exist_ok=True)
            log = open(c.log, "w")
            log.write("$ " + " ".join(c.command(loco)) + "\n")
            log.flush()
            p = subprocess.Popen(c.command(loco), stdout=log, stderr=subprocess.STDOUT, env=env)
            running.append((c, p, log, time.monotonic()))
            print(f"  start {c.label()}", flush=True)
        time.sleep(0.2)
        still = []
        for c, p, log, t0 in running:
            rc = p.poll()
            if rc is None:
                still.append((c, p, log, t0))
                continue
            log.close()
            took = time.monotonic() - t0
            with open(c.timing, "w") as f:
                json.dump({"seconds": took, "exit": rc, "jobs": jobs}, f)
            progress.done += 1
            if rc == 0 and c.finished():
                val = final_val(c.summary())
                progress.line(f"{c.label()}: val {val:.4f} ({fmt_duration(took)})", took)
            else:
                failed.append(c.label())
                progress.line(f"{c.label()}: FAILED (exit {rc}; see {c.log})", took)
        running = still
    return failed


def command_run(sweep, args):
    out = args.out or sweep["out"]
    jobs = args.jobs or sweep["jobs"]
    loco = os.path.abspath(args.loco)
    if not os.access(loco, os.X_OK):
        raise SweepError(f"{loco}: not an executable (build loco first: scripts/build.sh)")
    os.makedirs(out, exist_ok=True)
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1")
    tune = plan_cells(sweep, out, "tune")
    extra = (len(sweep["final_seeds"]) - len(set(sweep["final_seeds"]) & set(sweep["tune_seeds"])))
    total = len(tune) + (extra * len(sweep["methods"]) if sweep["two_stage"] else 0)
    finished = sum(c.finished() for c in tune)
    final_now = plan_cells(sweep, out, "final") if sweep["two_stage"] else []
    finished += sum(c.finished() for c in final_now)
    progress = Progress(total, finished, jobs)
    progress.line(f"sweep {sweep['path']}: {total} cells, {finished} finished already, "
                  f"{jobs} at a time, in {out}")
    t0 = time.monotonic()
    failed = run_cells(tune, loco, jobs, progress, env)
    if sweep["two_stage"]:
        failed += run_cells(plan_cells(sweep, out, "final"), loco, jobs, progress, env)
    print(f"sweep: {progress.done}/{total} cells finished, {len(failed)} failed, "
          f"{fmt_duration(time.monotonic() - t0)} this time", flush=True)
    report(sweep, out)
    if failed:
        print("failed cells (run again to retry):\n  " + "\n  ".join(failed), file=sys.stderr)
        return 1
    return 0


def command_plan(sweep, args):
    out = args.out or sweep["out"]
    for c in plan_cells(sweep, out, "tune"):
        print(("done  " if c.finished() else "to do ") + c.label())
    if sweep["two_stage"]:
        extra = [s for s in sweep["final_seeds"] if s not in sweep["tune_seeds"]]
        print(f"then seeds {extra} at each method's best point")
    return 0


# ------------------------------------------------------------------ the report


def read_curve(run_dir):
    """(step, cumulative bytes sent by this worker, val loss, val bpb or None) per validation."""
    sent, points = {}, []
    try:
        with open(os.path.join(run_dir, "metrics.jsonl")) as f:
            for line in f:
                r = json.loads(line)
                if "comm_sent_bytes" in r:
                    sent[r["step"]] = r["comm_sent_bytes"]
                if "val_loss" in r:
                    points.append((r["step"], r["val_loss"], r.get("val_bpb")))
    except OSError:
        return []
    curve, last = [], 0
    for step, loss, bpb in points:
        known = [s for s in sent if s <= step]
        last = sent[max(known)] if known else last
        curve.append((step, last, loss, bpb))
    return curve


def cell_seconds(cell, summary):
    """Wall time of the whole cell (launch to exit) as measured by `run`; the run's own
    wall_time_s (which leaves out start-up) when the cell was not timed."""
    try:
        with open(cell.timing) as f:
            return float(json.load(f)["seconds"])
    except (OSError, ValueError, KeyError):
        return float(summary.get("wall_time_s", 0.0))


def mean_std(values):
    """Mean and sample standard deviation (None for one value: no spread to report)."""
    if not values:
        return None, None
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else None)


def collect(sweep, out):
    """Every finished cell, grouped by (method, point)."""
    groups = []
    for m in sweep["methods"]:
        for p in grid_points(m):
            seeds = sorted(set(sweep["tune_seeds"]) | set(sweep["final_seeds"]))
            cells = [Cell(sweep, m, p, s, out) for s in seeds]
            done = [c for c in cells if c.finished()]
            if not done:
                continue
            sums = [c.summary() for c in done]
            vals = [final_val(s) for s in sums]
            bpbs = [s["final_val_bpb"] for s in sums if s.get("final_val_bpb") is not None]
            val_mean, val_std = mean_std(vals)
            bpb_mean, bpb_std = mean_std(bpbs) if len(bpbs) == len(sums) else (None, None)
            train_mean, train_std = mean_std([s["final_train_loss"] for s in sums])
            comm = [s.get("comm", {}) for s in sums]
            groups.append({
                "method": m["name"],
                "point": p,
                "point_name": point_name(p),
                "seeds": [c.seed for c in done],
                "val_losses": vals,
                "val_mean": val_mean,
                "val_std": val_std,
                "bpb_mean": bpb_mean,
                "bpb_std": bpb_std,
                "train_mean": train_mean,
                "train_std": train_std,
                "sent_bytes": statistics.mean(c.get("sent_bytes", 0) for c in comm),
                "ratio_vs_ddp": comm[0].get("ratio_vs_ddp_fp32"),
                "tokens": sums[0].get("tokens"),
                "workers": sums[0].get("workers"),
                "wall_s": sum(s.get("wall_time_s", 0.0) for s in sums),
                "cell_s": sum(cell_seconds(c, s) for c, s in zip(done, sums)),
                "curves": [read_curve(c.dir) for c in done],
            })
    return groups


def best_groups(groups):
    """Per method, the group with the lowest mean validation loss (most seeds on ties)."""
    best = {}
    for g in groups:
        b = best.get(g["method"])
        if b is None or (g["val_mean"], -len(g["seeds"])) < (b["val_mean"], -len(b["seeds"])):
            best[g["method"]] = g
    return best


def mean_curve(curves):
    """Mean (and std) over seeds at the validation steps all seeds share."""
    if not curves:
        return []
    steps = sorted(set.intersection(*(set(p[0] for p in c) for c in curves)))
    rows = []
    for step in steps:
        pts = [next(p for p in c if p[0] == step) for c in curves]
        loss_mean, loss_std = mean_std([p[2] for p in pts])
        rows.append((step, statistics.mean(p[1] for p in pts), loss_mean, loss_std or 0.0))
    return rows


def pareto_front(points):
    """(bytes, loss, name) points not beaten on both axes, sorted by bytes."""
    front = []
    for b, l, n in sorted(points, key=lambda p: (p[0], p[1])):
        if not front or l < front[-1][1]:
            front.append((b, l, n))
    return front


def fmt_bytes(b):
    for unit, div in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if b >= div:
            return f"{b / div:.2f} {unit}"
    return f"{b:.0f} B"


def pm(mean, std, digits=4):
    if mean is None:
        return "-"
    if std is None:
        return f"{mean:.{digits}f} (1 seed)"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def ordering_table(best):
    """Rank of each method's best setting at its last validation points: has it settled?"""
    curves = {m: mean_curve(g["curves"]) for m, g in best.items()}
    common = None
    for rows in curves.values():
        steps = {r[0] for r in rows}
        common = steps if common is None else common & steps
    steps = sorted(common or [])[-4:]
    lines = []
    for step in steps:
        ranked = sorted(curves, key=lambda m: next(r[2] for r in curves[m] if r[0] == step))
        lines.append((step, ranked))
    return lines


def write_plots(out, best, front):
    gp_common = ["set terminal pngcairo size 960,600 font 'sans,11'", "set grid",
                 "set key outside right", "set ylabel 'validation loss (nats per token)'"]
    names = sorted(best)
    for m in names:
        with open(os.path.join(out, f"curve-{m}.dat"), "w") as f:
            f.write(f"# {m} ({best[m]['point_name']}, seeds {best[m]['seeds']}): step, mean "
                    "cumulative bytes sent per worker, mean val loss, std\n")
            for step, sent, loss, std in mean_curve(best[m]["curves"]):
                f.write(f"{step} {sent:.0f} {loss:.6f} {std:.6f}\n")
    with open(os.path.join(out, "pareto.dat"), "w") as f:
        f.write("# the Pareto front of final (bytes sent per worker, val loss) of the best settings\n")
        for b, l, n in front:
            f.write(f"{b:.0f} {l:.6f} {n}\n")
    with_bytes = [m for m in names if best[m]["sent_bytes"] > 0]
    bytes_gp = gp_common + [
        f"set output '{out}/loss-vs-bytes.png'",
        "set title 'Validation loss vs cumulative bytes sent per worker (best setting, mean over seeds)'",
        "set xlabel 'cumulative bytes sent per worker (log scale)'", "set logscale x"]
    plots = [f"'{out}/curve-{m}.dat' using ($2 > 0 ? $2 : 1/0):3 with linespoints title '{m}'"
             for m in with_bytes]
    if front:
        plots.append(f"'{out}/pareto.dat' using 1:2 with steps lw 2 dt 2 lc rgb 'black' "
                     "notitle")
        plots.append(f"'{out}/pareto.dat' using 1:2 with points pt 6 ps 2.5 lc rgb 'black' "
                     "title 'Pareto front of the final points'")
    bytes_gp.append("plot " + ", ".join(plots))
    step_gp = gp_common + [
        f"set output '{out}/loss-vs-step.png'",
        "set title 'Validation loss vs step (best setting, mean ± std over seeds)'",
        "set xlabel 'step'",
        "plot " + ", ".join(f"'{out}/curve-{m}.dat' using 1:3:4 with yerrorlines title '{m}'"
                            for m in names)]
    written = []
    figures = [("loss-vs-step", step_gp)]
    if with_bytes:  # runs of one worker send nothing: no bytes axis for them
        figures.insert(0, ("loss-vs-bytes", bytes_gp))
    for name, lines in figures:
        gp = os.path.join(out, name + ".gp")
        with open(gp, "w") as f:
            f.write("\n".join(lines) + "\n")
        if shutil.which("gnuplot"):
            r = subprocess.run(["gnuplot", gp], capture_output=True, text=True)
            if r.returncode == 0:
                written.append(os.path.join(out, name + ".png"))
            else:
                print(f"sweep: gnuplot {gp} failed: {r.stderr.strip()}", file=sys.stderr)
    if not shutil.which("gnuplot"):
        print("sweep: gnuplot not found: wrote the .gp scripts and .dat files only",
              file=sys.stderr)
    return written


def report(sweep, out):
    groups = collect(sweep, out)
    if not groups:
        print("sweep: no finished cells to report yet")
        return None
    best = best_groups(groups)
    front = pareto_front([(g["sent_bytes"], g["val_mean"], m) for m, g in best.items()
                          if g["sent_bytes"] > 0])
    lines = [f"# Sweep {sweep['path']}", ""]
    if sweep["description"]:
        lines += [sweep["description"], ""]
    lines += ["Final validation loss (nats per token) and bits per byte: mean ± sample std over "
              "the seeds run.", "",
              "## Best setting per method", "",
              "| method | setting | seeds | val loss | val bits/byte | train loss | sent per worker "
              "| DDP fp32 / sent | workers | tokens |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for m in [x["name"] for x in sweep["methods"] if x["name"] in best]:
        g = best[m]
        ratio = "-" if g["ratio_vs_ddp"] is None else f"{g['ratio_vs_ddp']:.1f}x"
        lines.append(f"| {m} | `{g['point_name']}` | {len(g['seeds'])} | "
                     f"{pm(g['val_mean'], g['val_std'])} | {pm(g['bpb_mean'], g['bpb_std'])} | "
                     f"{pm(g['train_mean'], g['train_std'])} | {fmt_bytes(g['sent_bytes'])} | "
                     f"{ratio} | {g['workers']} | {g['tokens']} |")
    lines += ["", "## Every setting", "",
              "| method | setting | seeds | val loss | val losses |", "|---|---|---|---|---|"]
    for g in groups:
        mark = " **(best)**" if best[g["method"]] is g else ""
        lines.append(f"| {g['method']} | `{g['point_name']}`{mark} | {len(g['seeds'])} | "
                     f"{pm(g['val_mean'], g['val_std'])} | "
                     f"{', '.join(f'{v:.4f}' for v in g['val_losses'])} |")
    order = ordering_table(best)
    if order:
        lines += ["", "## Ordering of the best settings at the last validation points", ""]
        for step, ranked in order:
            lines.append(f"- step {step}: " + " < ".join(ranked))
    if front:
        lines += ["", "Pareto front (final bytes sent per worker, val loss): " +
                  "; ".join(f"{n} ({fmt_bytes(b)}, {l:.4f})" for b, l, n in front)]
    cells = sum(len(g["seeds"]) for g in groups)
    wall = sum(g["cell_s"] for g in groups)
    lines += ["", f"Cost: {cells} runs, {fmt_duration(wall)} of wall time summed over the runs "
              "(launch to exit; runs started together overlap)."]
    plots = write_plots(out, best, front)
    lines += [""] + [f"![{os.path.basename(p)}]({os.path.basename(p)})" for p in plots]
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    result = {
        "groups": [{k: v for k, v in g.items() if k != "curves"} for g in groups],
        "best": {m: g["point_name"] for m, g in best.items()},
        "pareto": [{"method": n, "sent_bytes": b, "val_loss": l} for b, l, n in front],
        "runs": cells,
        "run_wall_s": wall,
    }
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(result, f, indent=2)
    print("\n".join(lines[:lines.index("## Every setting")]))
    print(f"sweep: report {out}/results.md, {out}/results.json" +
          (f", plots {', '.join(plots)}" if plots else ""))
    return result


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["run", "report", "plan"])
    ap.add_argument("sweep", help="the sweep definition (JSON)")
    ap.add_argument("--out", help="output directory (default: the definition's \"out\")")
    ap.add_argument("--jobs", type=int, help="runs at a time (default: the definition's)")
    ap.add_argument("--loco", default="build/loco", help="the loco binary (default build/loco)")
    args = ap.parse_args(argv)
    try:
        sweep = load_definition(args.sweep)
        if args.jobs is not None and args.jobs < 1:
            raise SweepError("--jobs must be >= 1")
        if args.command == "run":
            return command_run(sweep, args)
        if args.command == "plan":
            return command_plan(sweep, args)
        return 0 if report(sweep, args.out or sweep["out"]) is not None else 1
    except SweepError as e:
        print(f"sweep: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sweep: interrupted; run again to continue (finished cells are kept)",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
