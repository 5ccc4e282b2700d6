"""Run the benchmark: python -m gradlab.bench [--quick] [--repeat N] [--out FILE]

Every comparison is measured side by side in this one invocation, alternating the two sides
rep by rep, and reported as medians:
1. single run: `gradlab` (thermometer_sgd_split, 5000 epochs, everything recorded) against the
   same loop written bare (gradlab.bench.bare), whole-process wall time, with a breakdown;
2. sweep: the 12-job grid of sweeps/bench_grid.yaml through `gradlab -m` (what `make sweep`
   runs) against the tutorial pattern (gradlab.bench.tutorial), each into a fresh SQLite store;
3. inner loop: seconds per 1000 epochs of gradlab's loop for each gradient method and NumPy,
   against the same loops written bare (gradlab.bench.loops);
4. memory: peak resident memory of a single run (trainer + recorder, sampled together) and of
   the bare script;
5. batched sweeps: the headline sweep (60 jobs) and a dense grid (240 jobs) through the batched
   launcher against the basic one, the 12-job grid against its loops written bare, and the dense
   grid's peak memory;
6. pruning: the search of sweeps/optuna_pruned_mlp.yaml with its median pruner against the same
   search without one: trials pruned, epochs run, wall time, and the best configuration each found;
7. memory that does not grow with a run: a 2,000,000-epoch run and a 10^6-row CSV, with their
   figures, each process tree sampled;
8. a user's own nn.Module: a batch of 64 learning rates against the basic launcher, and its inner
   loop against torch.func written by hand (gradlab.bench.usermodule);
9. scale (gradlab.bench.scale): a 1,000-job sweep, a 10,000-job grid check, gradlab-compare on
   the 1,000 runs, against MLflow's floor for a run (--ten-thousand: the 10,000-job sweep too).
With --cluster, instead: the dense grid on a Slurm cluster that is up (gradlab.bench.cluster).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from gradlab.bench import cluster, scale, usermodule
from gradlab.bench.memory import sampled_memory

ROOT = Path(__file__).resolve().parents[3]
TARGETS = {"single_run_ratio_max": 1.5, "sweep_speedup_min": 6.0, "inner_loop_ratio_max": 1.15, "peak_rss_mib_max": 600,
           "headline_sweep_seconds_max": 15.0, "dense_seconds_per_job_max": 0.25, "grid_vs_bare_ratio_max": 1.0,
           "dense_peak_rss_mib_max": 1024}


def timed(cmd: list[str], env: dict, tfile: Path | None = None, cwd: Path = ROOT) -> tuple[float, dict]:
    """Wall time of a whole process, and the timings it and its recorder wrote (GRADLAB_TIMINGS)."""
    from gradlab import timings

    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", **env}
    if tfile is not None:
        env[timings.ENV] = str(tfile)
        for role in ("", ".recorder"):
            Path(f"{tfile}{role}").unlink(missing_ok=True)
    start = time.time()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    end = time.time()
    if proc.returncode != 0:
        raise SystemExit(f"bench: {' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    data = timings.read(str(tfile)) if tfile is not None else {}
    if tfile is not None:
        data["recorder"] = timings.read(str(tfile), "recorder")
    data.update(start=start, end=end)
    return end - start, data


def median_rep(samples: list[tuple[float, dict]]) -> tuple[float, dict]:
    return sorted(samples, key=lambda s: s[0])[len(samples) // 2]


# ---------------------------------------------------------------------------- 1 and 4
def single_run(tmp: Path, epochs: int, reps: int) -> dict:
    py = sys.executable
    store = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'single' / 'mlflow.db'}"}
    ours_cmd = [py, "-m", "gradlab", "experiment=thermometer_sgd_split", f"train.epochs={epochs}"]
    bare_cmd = [py, "-m", "gradlab.bench.bare", str(epochs)]
    timed(ours_cmd, store)  # the store exists before the timed runs, as it does for a user's second run
    ours, bare = [], []
    for rep in range(reps):  # alternate who goes first, so drift favours neither
        pair = [(ours, ours_cmd, tmp / "ours.json"), (bare, bare_cmd, tmp / "bare.json")]
        for samples, cmd, tfile in (pair if rep % 2 == 0 else pair[::-1]):
            samples.append(timed(cmd, store, tfile))
    (t_ours, o), (t_bare, b) = median_rep(ours), median_rep(bare)
    s = o["stamps"]
    rec = o["recorder"]["seconds"]
    breakdown = {  # on the trainer's critical path, from process start to exit
        "python start, imports of hydra and gradlab": s["main"] - o["start"],
        "Hydra composes the config": s["record"] - s["main"],
        "import torch, build data, model, optimizer": s["setup"] - s["record"],
        f"training ({epochs} epochs, rows streamed to the recorder)": s["trained"] - s["setup"],
        "final evaluation, plot data, record queued": s["queued"] - s["trained"],
        "waiting for the recorder to finish (figures, artifacts)": s["recorded"] - s["queued"],
        "exit": o["end"] - s["recorded"],
    }
    bare_breakdown = {
        "python start, import torch": b["stamps"]["imported"] - b["start"],
        "the loop (incl. torch.optim's first import of dynamo)": b["stamps"]["trained"] - b["stamps"]["imported"],
        "exit": b["end"] - b["stamps"]["trained"],
    }
    background = {  # in the recorder process, overlapping the trainer (Open includes matplotlib's import)
        "import mlflow, open the store": rec.get("import mlflow", 0.0) + rec.get("Open", 0.0) - rec.get("import matplotlib", 0.0),
        "import matplotlib (preloaded)": rec.get("import matplotlib", 0.0),
        "create the run, log params, inputs, config": rec.get("Start", 0.0),
        "metric logging (batched)": rec.get("Log", 0.0),
        "figures, artifacts, final metrics, status": rec.get("Finish", 0.0),
    }
    rss_ours = (o["peak_rss_kib"] + o["recorder"]["peak_rss_kib"]) / 1024
    sampled = {"gradlab": sampled_memory(ours_cmd, store), "bare": sampled_memory(bare_cmd, store)}
    return {
        "epochs": epochs, "repetitions": reps,
        "gradlab_seconds": t_ours, "bare_seconds": t_bare, "ratio": t_ours / t_bare,
        "gradlab_all": [round(x[0], 3) for x in ours], "bare_all": [round(x[0], 3) for x in bare],
        "breakdown_seconds": breakdown, "bare_breakdown_seconds": bare_breakdown, "recorder_seconds": background,
        "memory_mib": {"gradlab_run_peak_rss": sampled["gradlab"]["peak_rss_mib"],
                       "gradlab_run_peak_pss": sampled["gradlab"]["peak_pss_mib"],
                       "trainer_peak_rss": o["peak_rss_kib"] / 1024, "recorder_peak_rss": o["recorder"]["peak_rss_kib"] / 1024,
                       "sum_of_process_peaks": rss_ours,
                       "bare_run_peak_rss": sampled["bare"]["peak_rss_mib"], "bare_peak_rss": b["peak_rss_kib"] / 1024},
    }


# ---------------------------------------------------------------------------------- 2
def sweep(tmp: Path, epochs: int, reps: int, tutorial_reps: int, quick: bool) -> dict:
    py = sys.executable
    subset = ["optimizer=sgd", "optimizer.lr=0.01"] if quick else []
    t_subset = ["optimizer=sgd", "lr=0.01"] if quick else ["optimizer=sgd,adam", "lr=0.001,0.003,0.01"]
    jobs = 2 if quick else 12
    ours, tutorial = [], []
    for rep in range(max(reps, tutorial_reps)):
        d = tmp / f"sweep{rep}"
        if rep < reps:
            ours.append(timed([py, "-m", "gradlab", "-m", "-cd", "sweeps", "-cn", "bench_grid", f"train.epochs={epochs}",
                               *subset, f"hydra.sweep.dir={d}/ours"],
                              {"MLFLOW_TRACKING_URI": f"sqlite:///{d / 'ours.db'}"})[0])
        if rep < tutorial_reps:
            # In its own folder: MLflow puts a SQLite store's artifacts in ./mlruns of the working directory.
            (d / "tutorial").mkdir(parents=True, exist_ok=True)
            tutorial.append(timed([py, "-m", "gradlab.bench.tutorial", "-m", *t_subset, "scaling=factor,standardize",
                                   f"epochs={epochs}", f"hydra.sweep.dir={d}/tutorial", f"hydra.run.dir={d}/tutorial"],
                                  {"MLFLOW_TRACKING_URI": f"sqlite:///{d / 'tutorial.db'}"}, cwd=d / "tutorial")[0])
    t_ours, t_tut = statistics.median(ours), statistics.median(tutorial)
    return {"jobs": jobs, "epochs": epochs, "repetitions": {"gradlab": reps, "tutorial": tutorial_reps},
            "gradlab_seconds": t_ours, "tutorial_seconds": t_tut, "speedup": t_tut / t_ours,
            "gradlab_seconds_per_job": t_ours / jobs, "tutorial_seconds_per_job": t_tut / jobs,
            "gradlab_all": [round(x, 2) for x in ours], "tutorial_all": [round(x, 2) for x in tutorial]}


# ---------------------------------------------------------------------------------- 3
def inner_loop(epochs: int, reps: int) -> dict:
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from gradlab import training
    from gradlab.bench import loops
    from gradlab.bench.drive import fit_seconds
    from gradlab.config import register_configs

    register_configs()

    def ours(method: str) -> float:
        overrides = ["experiment=thermometer_handgrad_scaled", f"train.epochs={epochs}"]
        overrides += ["device=numpy"] if method == "numpy" else [f"grad={method}"]
        with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
            cfg = OmegaConf.to_object(compose("config", overrides=overrides))
        return fit_seconds(training.setup(cfg), epochs)

    out = {}
    for method, bare in loops.LOOPS.items():
        ours(method), bare(50)  # warm up: first calls pay one-off costs
        mine, theirs = [], []
        for rep in range(reps):
            if rep % 2 == 0:
                mine.append(ours(method))
                start = time.perf_counter()
                bare(epochs)
                theirs.append(time.perf_counter() - start)
            else:
                start = time.perf_counter()
                bare(epochs)
                theirs.append(time.perf_counter() - start)
                mine.append(ours(method))
        a, b = statistics.median(mine), statistics.median(theirs)
        out[method] = {"gradlab_s_per_1000": a * 1000 / epochs, "bare_s_per_1000": b * 1000 / epochs, "ratio": a / b}
    return {"epochs": epochs, "repetitions": reps, "methods": out}


# ---------------------------------------------------------------------------------- 5
def batched(tmp: Path, quick: bool) -> dict:
    """The batched launcher end to end, everything recorded, each sweep against itself through
    Hydra's basic launcher (fresh stores); the 12-job grid against its 12 loops written bare; the
    peak memory of the dense grid."""
    py = sys.executable
    small = ["optimizer=gd", "data.scaling=factor", "train.epochs=100"] if quick else []  # quick: one optimizer, one scaling
    out = {}
    for label, name, jobs in (("headline", "lr_scale_optimizer", 5 if quick else 60), ("dense", "dense_grid", 20 if quick else 240)):
        times = {}
        for launcher in ("batched", "basic"):
            d = tmp / f"{label}-{launcher}"
            times[launcher] = timed([py, "-m", "gradlab", "-m", "-cd", "sweeps", "-cn", name, f"hydra/launcher={launcher}",
                                     *small, f"hydra.sweep.dir={d}/ms"], {"MLFLOW_TRACKING_URI": f"sqlite:///{d / 'mlflow.db'}"})[0]
        out[label] = {"jobs": jobs, "batched_seconds": times["batched"], "basic_seconds": times["basic"],
                      "batched_seconds_per_job": times["batched"] / jobs, "basic_seconds_per_job": times["basic"] / jobs,
                      "speedup": times["basic"] / times["batched"]}
    epochs = 200 if quick else 5000
    d = tmp / "grid12"
    ours = timed([py, "-m", "gradlab", "-m", "-cd", "sweeps", "-cn", "bench_grid", f"train.epochs={epochs}",
                  f"hydra.sweep.dir={d}/ms"], {"MLFLOW_TRACKING_URI": f"sqlite:///{d / 'mlflow.db'}"})[0]
    bare = timed([py, "-m", "gradlab.bench.bare_grid", str(epochs)], {})[0]
    out["grid12"] = {"jobs": 12, "epochs": epochs, "batched_seconds": ours, "bare_loops_seconds": bare, "ratio": ours / bare}
    d = tmp / "dense-memory"
    out["dense_memory_mib"] = sampled_memory([py, "-m", "gradlab", "-m", "-cd", "sweeps", "-cn", "dense_grid", *small,
                                              f"hydra.sweep.dir={d}/ms"], {"MLFLOW_TRACKING_URI": f"sqlite:///{d / 'mlflow.db'}"})
    return out


# ---------------------------------------------------------------------------------- 6
def pruning(tmp: Path, quick: bool) -> dict:
    """The pruned search against itself with `pruner.name=none`, each into a fresh store."""
    from gradlab.tracking import Store, query

    py = sys.executable
    small = ["hydra.sweeper.n_trials=16", "train.epochs=400", "hydra.sweeper.pruner.n_warmup_steps=50"] if quick else []
    out = {}
    for label, pruner in (("pruned", "median"), ("unpruned", "none")):
        d = tmp / f"search-{label}"
        uri = f"sqlite:///{d / 'mlflow.db'}"
        seconds = timed([py, "-m", "gradlab", "-cd", "sweeps", "-cn", "optuna_pruned_mlp", f"hydra.sweeper.pruner.name={pruner}",
                         "tracking.plots=none", *small, f"hydra.sweep.dir={d}/ms"], {"MLFLOW_TRACKING_URI": uri})[0]
        store = Store(uri)
        parent = query.latest_sweep(store, "optuna_pruned_mlp")
        kids = query.children(store, parent.id)
        out[label] = {"seconds": seconds, "trials": len(kids), "pruned": sum(k.outcome == "pruned" for k in kids),
                      "epochs_run": int(sum(k.metrics.get("epochs_run", 0) for k in kids)),
                      "best_value": float(parent.tag("study.best_value", "nan")), "best_params": parent.tag("study.best_params")}
    p, u = out["pruned"], out["unpruned"]
    out.update(epochs_saved=1 - p["epochs_run"] / u["epochs_run"], time_saved=1 - p["seconds"] / u["seconds"],
               same_best=p["best_params"] == u["best_params"])
    return out


# ---------------------------------------------------------------------------------- 7
def large(tmp: Path, quick: bool) -> dict:
    """Memory that does not grow with a run: 2,000,000 epochs (history spilled to disk, figures
    from a bounded number of points) and a 10⁶-row CSV (parsed as read, its landscape from
    sufficient statistics), each whole process tree sampled, with every figure made."""
    from gradlab.tracking import Store, query

    py = sys.executable
    epochs, rows = (20_000, 10_000) if quick else (2_000_000, 1_000_000)
    uri = f"sqlite:///{tmp / 'large.db'}"
    long_run = sampled_memory([py, "-m", "gradlab", "experiment=thermometer_handgrad_scaled", f"train.epochs={epochs}",
                               "tracking.experiment=long"], {"MLFLOW_TRACKING_URI": uri})
    csv_path = tmp / "rows.csv"
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 10, rows)
    np.savetxt(csv_path, np.stack([x, 2 * x + 1 + rng.normal(size=rows)], 1), delimiter=",", header="x,y", comments="", fmt="%.6f")
    big_csv = sampled_memory([py, "-m", "gradlab", "data=csv", f"data.path={csv_path}", "data.target=y", "data.inputs=[x]",
                              "model=linear", "train.epochs=200", "tracking.experiment=big_csv"], {"MLFLOW_TRACKING_URI": uri})
    store = Store(uri)
    plots = {}
    for name in ("long", "big_csv"):
        (run,) = query.experiment_runs(store, query.experiment_id(store, name))
        plots[name] = sorted(p.rsplit("/", 1)[-1] for p in query.artifact_paths(store, run.id, "plots"))
    return {"epochs": epochs, "rows": rows, "long_run_mib": long_run, "big_csv_mib": big_csv, "plots": plots}


# ------------------------------------------------------------------------------ report
def verdicts(r: dict) -> dict:
    inner = {m: v["ratio"] for m, v in r["inner_loop"]["methods"].items() if m != "numpy"}
    return {
        "single_run_ratio <= 1.5": r["single_run"]["ratio"] <= TARGETS["single_run_ratio_max"],
        "sweep_speedup >= 6": r["sweep"]["speedup"] >= TARGETS["sweep_speedup_min"],
        "inner_loop_ratio <= 1.15 (every gradient method)": all(v <= TARGETS["inner_loop_ratio_max"] for v in inner.values()),
        "peak_rss < 600 MiB": r["single_run"]["memory_mib"]["gradlab_run_peak_rss"] < TARGETS["peak_rss_mib_max"],
        "headline sweep (60 jobs) <= 15 s": r["batched"]["headline"]["batched_seconds"] <= TARGETS["headline_sweep_seconds_max"],
        "dense grid (240 jobs) <= 0.25 s/job": r["batched"]["dense"]["batched_seconds_per_job"] <= TARGETS["dense_seconds_per_job_max"],
        "12-job grid <= 1.0x its bare loops": r["batched"]["grid12"]["ratio"] <= TARGETS["grid_vs_bare_ratio_max"],
        "dense grid peak memory < 1 GiB": r["batched"]["dense_memory_mib"]["peak_rss_mib"] < TARGETS["dense_peak_rss_mib_max"],
        "2,000,000-epoch run < 600 MiB": r["large"]["long_run_mib"]["peak_rss_mib"] < TARGETS["peak_rss_mib_max"],
        "10^6-row CSV with all its plots < 1 GiB": r["large"]["big_csv_mib"]["peak_rss_mib"] < TARGETS["dense_peak_rss_mib_max"]
        and len(r["large"]["plots"]["big_csv"]) == 3,
    }


def table(r: dict) -> str:
    s, w, i = r["single_run"], r["sweep"], r["inner_loop"]
    lines = [f"gradlab benchmark ({r['mode']} mode) on {r['machine']['cpus']} CPUs, {r['machine']['python']}, "
             f"torch {r['machine']['torch']}, mlflow {r['machine']['mlflow']}", "",
             f"1. single run, {s['epochs']} epochs, medians of {s['repetitions']} (whole process):",
             f"   gradlab {s['gradlab_seconds']:.2f} s   bare {s['bare_seconds']:.2f} s   ratio {s['ratio']:.2f}x  (target <= 1.5)",
             "   where gradlab's time goes (critical path):"]
    lines += [f"     {v:6.2f} s  {k}" for k, v in s["breakdown_seconds"].items()]
    lines += ["   the bare script:"] + [f"     {v:6.2f} s  {k}" for k, v in s["bare_breakdown_seconds"].items()]
    lines += ["   in the recorder process, overlapped:"] + [f"     {v:6.2f} s  {k}" for k, v in s["recorder_seconds"].items()]
    lines += ["", f"2. sweep, {w['jobs']} jobs x {w['epochs']} epochs, fresh stores (gradlab x{w['repetitions']['gradlab']}, "
              f"tutorial x{w['repetitions']['tutorial']}):",
              f"   gradlab {w['gradlab_seconds']:.1f} s ({w['gradlab_seconds_per_job']:.2f} s/job)   tutorial "
              f"{w['tutorial_seconds']:.1f} s ({w['tutorial_seconds_per_job']:.2f} s/job)   speedup {w['speedup']:.1f}x  (target >= 6)",
              "", f"3. inner loop, seconds per 1000 epochs, medians of {i['repetitions']}:",
              f"   {'method':18} {'gradlab':>9} {'bare':>9} {'ratio':>7}"]
    lines += [f"   {m:18} {v['gradlab_s_per_1000']:9.4f} {v['bare_s_per_1000']:9.4f} {v['ratio']:6.2f}x"
              for m, v in i["methods"].items()]
    lines += ["   (target <= 1.15 for every gradient method; numpy is a device, reported alongside)"]
    m = s["memory_mib"]
    lines += ["", "4. peak memory of a single run (trainer + recorder, sampled every 20 ms):",
              f"   resident {m['gradlab_run_peak_rss']:.0f} MiB (target < 600; shared libraries counted in both processes), "
              f"proportional {m['gradlab_run_peak_pss']:.0f} MiB",
              f"   per process: trainer {m['trainer_peak_rss']:.0f} + recorder {m['recorder_peak_rss']:.0f} = "
              f"{m['sum_of_process_peaks']:.0f} MiB (peaks at different moments); bare script {m['bare_run_peak_rss']:.0f} MiB", ""]
    bt = r["batched"]
    lines += ["5. batched sweeps (hydra/launcher=batched), end to end, everything recorded, fresh stores:"]
    for label in ("headline", "dense"):
        v = bt[label]
        lines.append(f"   {label:9} {v['jobs']:3d} jobs: batched {v['batched_seconds']:6.1f} s ({v['batched_seconds_per_job']:.3f} s/job)"
                     f"   basic launcher {v['basic_seconds']:6.1f} s ({v['basic_seconds_per_job']:.3f} s/job)   {v['speedup']:.1f}x faster")
    g = bt["grid12"]
    lines += [f"   12-job grid x {g['epochs']} epochs: batched {g['batched_seconds']:.1f} s   its 12 loops bare, one after another "
              f"{g['bare_loops_seconds']:.1f} s   ratio {g['ratio']:.2f}x  (target <= 1.0)",
              f"   peak memory of the dense grid (trainer + recorders, sampled): resident {bt['dense_memory_mib']['peak_rss_mib']:.0f} MiB, "
              f"proportional {bt['dense_memory_mib']['peak_pss_mib']:.0f} MiB  (target < 1024)", ""]
    pr = r["pruning"]
    lines += ["6. pruning (sweeps/optuna_pruned_mlp.yaml, median pruner) against the same search without one:"]
    for label in ("pruned", "unpruned"):
        v = pr[label]
        lines.append(f"   {label:9} {v['trials']} trials, {v['pruned']:2d} pruned, {v['epochs_run']:6d} epochs run, "
                     f"{v['seconds']:5.1f} s; best {v['best_value']:.4g} at {v['best_params']}")
    lines += [f"   pruning saved {pr['epochs_saved']:.0%} of the epochs and {pr['time_saved']:.0%} of the wall time; "
              f"{'the same' if pr['same_best'] else 'a different'} best configuration", ""]
    lg = r["large"]
    lines += ["7. memory that does not grow with a run (whole process tree, sampled):",
              f"   {lg['epochs']:,} epochs: resident {lg['long_run_mib']['peak_rss_mib']:.0f} MiB  (target < 600; "
              f"figures: {', '.join(lg['plots']['long'])})",
              f"   a {lg['rows']:,}-row CSV: resident {lg['big_csv_mib']['peak_rss_mib']:.0f} MiB  (target < 1024; "
              f"figures: {', '.join(lg['plots']['big_csv'])})", ""]
    lines += usermodule.lines(r)
    lines += [*scale.lines(r["scale"], r["mode"] == "quick"), ""]
    if r["mode"] == "quick":
        lines += ["   (quick mode: a smoke run; the targets apply to the full benchmark)"]
    else:
        lines += [f"   {'PASS' if ok else 'MISS'}  {name}" for name, ok in r["verdicts"].items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m gradlab.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a reduced run (a smoke test): few epochs, one repetition")
    p.add_argument("--repeat", type=int, default=None, help="repetitions of each measurement (default 5; quick 1)")
    p.add_argument("--tutorial-repeat", type=int, default=1, help="repetitions of the slow tutorial sweep (default 1)")
    p.add_argument("--ten-thousand", action="store_true", help="the 10,000-job sweep too (about 10 minutes more)")
    p.add_argument("--out", default=os.environ.get("BENCH_OUT", str(ROOT / "bench-results" / "bench.json")))
    p.add_argument("--cluster", action="store_true", help="only the dense grid on the Slurm cluster of `make cluster` "
                   "(its exports set: . .cluster/env)")
    p.add_argument("--cluster-submitit-jobs", type=int, default=None, help="with --cluster: run this many of the grid's "
                   "jobs through submitit_slurm, scaled to the 240 (default: all)")
    p.add_argument("--cluster-2000", action="store_true", help="with --cluster: instead, the 2,000-job sweep through "
                   "Slurm, compared with the local batched launcher's")
    a = p.parse_args(argv)
    if a.cluster:
        return cluster_only(a)
    reps = a.repeat or (1 if a.quick else 5)
    epochs = 200 if a.quick else 5000
    import importlib.metadata

    import torch

    result = {"mode": "quick" if a.quick else "full",
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
                          "mlflow": importlib.metadata.version("mlflow"), "platform": platform.platform()},
              "targets": dict(TARGETS)}
    with tempfile.TemporaryDirectory(prefix="gradlab-bench-") as tmp:
        tmp = Path(tmp)
        print("bench: single run ...", file=sys.stderr, flush=True)
        result["single_run"] = single_run(tmp, epochs, reps)
        print("bench: inner loop ...", file=sys.stderr, flush=True)
        result["inner_loop"] = inner_loop(epochs, reps)
        print("bench: sweep (the tutorial pattern takes minutes) ...", file=sys.stderr, flush=True)
        result["sweep"] = sweep(tmp, epochs, max(1, min(reps, 3)), a.tutorial_repeat, a.quick)
        print("bench: batched sweeps (the basic launcher's dense grid takes minutes) ...", file=sys.stderr, flush=True)
        result["batched"] = batched(tmp, a.quick)
        print("bench: pruning ...", file=sys.stderr, flush=True)
        result["pruning"] = pruning(tmp, a.quick)
        print("bench: a long run and a large CSV ...", file=sys.stderr, flush=True)
        result["large"] = large(tmp, a.quick)
        print("bench: a user's module, batched and by hand ...", file=sys.stderr, flush=True)
        result["usermodule"] = usermodule.run(tmp, a.quick, reps, timed)
        print("bench: scale (a 1,000-job sweep, a 10,000-job grid check) ...", file=sys.stderr, flush=True)
        result["scale"] = scale.measure(tmp, a.quick, a.ten_thousand)
    result["targets"].update(usermodule.TARGETS)
    result["verdicts"] = {**verdicts(result), **usermodule.verdicts(result)}
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(table(result))
    print(f"\nbench: results in {out}")


def cluster_only(a) -> None:
    cluster.needs()
    result = {"mode": "quick" if a.quick else "full", "machine": {"cpus": os.cpu_count(), "load": os.getloadavg()},
              "targets": cluster.TARGETS}
    with tempfile.TemporaryDirectory(prefix="gradlab-bench-") as tmp:  # this machine is the node: it reads /tmp
        if a.cluster_2000:
            print("bench: the 2,000-job sweep through Slurm, then locally ...", file=sys.stderr, flush=True)
            result["two_thousand"] = cluster.two_thousand(Path(tmp), a.quick, timed)
        else:
            result["cluster"] = cluster.run(Path(tmp), a.quick, a.repeat or 1, timed, a.cluster_submitit_jobs)
    result["verdicts"] = cluster.verdicts(result)
    out = Path(a.out).with_name("bench-cluster.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print("\n".join(cluster.lines(result) + [f"   {'PASS' if ok else 'MISS'}  {k}" for k, ok in result["verdicts"].items()]))
    print(f"\nbench: results in {out}")


if __name__ == "__main__":
    main()
