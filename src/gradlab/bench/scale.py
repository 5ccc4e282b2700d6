"""`make bench`, at scale: a 1,000-job sweep (4 optimizers × 25 learning rates × 10 seeds,
mini-batches of 3, 500 epochs, on the dense grid's thermometer) end to end with everything the
defaults record, its launcher tree's peak memory, the grid check of 10,000 jobs (composition and
checks only), training 10,000 configurations at once against the same descent bare
(gradlab.bench.fast_axis), `gradlab-compare` on the 1,000 runs (from the sweep's table of results, and from
the store as the reference), and MLflow's own floor for a run (create + end) measured alongside.
`--ten-thousand` adds the 10,000-job sweep (100 seeds, 300 epochs; about 10 minutes) and
`gradlab-compare` on it.

    python -m gradlab.bench.scale [--quick] [--ten-thousand]    this section alone
    python -m gradlab.bench.scale check SWEEP_ARGS...            one grid check, as JSON (used above)
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gradlab.bench import fast_axis

ROOT = Path(__file__).resolve().parents[3]
OPTIMIZERS = ("gd", "sgd_momentum", "adam", "rmsprop")
TARGETS = {"sweep_1000_seconds_max": 75.0, "grid_check_10000_seconds_max": 30.0, "compare_1000_seconds_max": 15.0,
           "compare_10000_seconds_max": 60.0, "fit_10000_seconds_max": 8.0, "sweep_10000_seconds_max": 600.0, "sweep_peak_rss_mib_max": 2048}


def grid(lrs: int, seeds: int, epochs: int) -> list[str]:
    """Overrides of sweeps/dense_grid.yaml: OPTIMIZERS × `lrs` learning rates (1e-4 to 10) × `seeds` seeds."""
    import numpy as np

    rates = ",".join(f"{v:.3g}" for v in np.logspace(-4, 1, lrs))
    return [f"optimizer={','.join(OPTIMIZERS)}", f"optimizer.lr={rates}", f"train.seed=range(0,{seeds})",
            "data.scaling=factor", "train.batch_size=3", f"train.epochs={epochs}", "tracking.experiment=scale"]


def check(args: list[str]) -> dict:
    """Compose a sweep of sweeps/dense_grid.yaml and check every job, as a sweep does before any
    run (in this process: no store, no training); its seconds and this process's peak memory."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode

    from gradlab.config import register_configs
    from gradlab.multirun import grid as sweep_grid
    from gradlab.multirun import hydra_internals

    register_configs()
    app = hydra_internals.hydra(ROOT / "conf", str(ROOT / "sweeps"))
    start = time.perf_counter()
    cfg = app.compose_config(config_name="dense_grid", overrides=[*args, "hydra.mode=MULTIRUN"], with_log_configuration=False,
                             run_mode=RunMode.MULTIRUN)
    hydra_internals.keep_compositions(app.config_loader)
    jobs = sweep_grid.jobs(cfg)
    sweep_grid.refuse_bad_jobs(cfg, app.config_loader, "scale", jobs)
    seconds = time.perf_counter() - start
    GlobalHydra.instance().clear()
    return {"jobs": len(jobs), "seconds": seconds, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _env(uri: str) -> dict:
    return {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_TRACKING_URI": uri}


def _run(cmd: list[str], uri: str) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(uri), capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"bench: {' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return seconds


def sweep(folder: Path, overrides: list[str]) -> dict:
    """The sweep end to end into a fresh store, its process tree's memory sampled; what it left
    there (every child a run, nothing RUNNING, the table of results on its parent); and
    gradlab-compare on it, from the table and from the store."""
    from gradlab.bench.memory import sampled_memory
    from gradlab.tracking import Store, query
    from gradlab.tracking.spec import TABLE, TABLE_TAG

    uri = f"sqlite:///{folder / 'mlflow.db'}"
    cmd = [sys.executable, "-m", "gradlab", "-m", "-cd", "sweeps", "-cn", "dense_grid", *overrides,
           f"hydra.sweep.dir={folder / 'multirun'}"]
    start = time.perf_counter()
    memory = sampled_memory(cmd, {"MLFLOW_TRACKING_URI": uri})
    seconds = time.perf_counter() - start
    store = Store(uri)
    parent = query.latest_sweep(store, "scale")
    children = query.children(store, parent.id)
    left = {"children": len(children), "running": len(query.running(store)), "table": parent.tag("results") == TABLE,
            "with_history": sum(1 for c in children[:20] if "history.csv" in query.artifact_paths(store, c.id))}
    compare = [sys.executable, "-c", "from gradlab.compare import main; main()", "--parent", parent.id]
    from_table = _run([*compare, "--out", str(folder / "report-table")], uri)
    store.set_tags(parent.id, {TABLE_TAG: ""})  # as a sweep from before tables: its children read from the store
    from_store = _run([*compare, "--out", str(folder / "report-store")], uri)
    store.set_tags(parent.id, {TABLE_TAG: TABLE})
    return {"seconds": seconds, "memory_mib": memory, "left": left,
            "compare_seconds": from_table, "compare_from_store_seconds": from_store}


def measure(tmp: Path, quick: bool, ten_thousand: bool) -> dict:
    from gradlab.tracking import floor

    lrs, seeds, epochs = (5, 2, 50) if quick else (25, 10, 500)
    jobs = len(OPTIMIZERS) * lrs * seeds
    out = {"floor_seconds_per_run": floor.seconds_per_run(f"sqlite:///{tmp / 'floor.db'}", 20 if quick else 200)}
    print(f"bench: a {jobs}-job sweep ...", file=sys.stderr, flush=True)
    out["sweep"] = {"jobs": jobs, "epochs": epochs, **sweep(tmp / "scale-sweep", grid(lrs, seeds, epochs))}
    out["sweep"]["seconds_per_job"] = out["sweep"]["seconds"] / jobs
    out["sweep"]["ratio_to_floor"] = out["sweep"]["seconds_per_job"] / out["floor_seconds_per_run"]
    big_lrs, big_seeds = (5, 5) if quick else (25, 100)
    cmd = [sys.executable, "-m", "gradlab.bench.scale", "check", *grid(big_lrs, big_seeds, 300)]
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(""), capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"bench: the grid check failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    out["grid_check"] = json.loads(proc.stdout.strip().splitlines()[-1])
    print("bench: training thousands of configurations at once ...", file=sys.stderr, flush=True)
    out["fast_axis"] = fast_axis.measure(quick)
    if ten_thousand:
        print("bench: the 10,000-job sweep (about 10 minutes) ...", file=sys.stderr, flush=True)
        big = len(OPTIMIZERS) * big_lrs * big_seeds
        out["sweep_10000"] = {"jobs": big, "epochs": 300, **sweep(tmp / "scale-10000", grid(big_lrs, big_seeds, 300))}
    out["verdicts"] = {} if quick else verdicts(out)  # tiny sizes judge nothing against the targets
    return out


def verdicts(r: dict) -> dict:
    s, g = r["sweep"], r["grid_check"]
    out = {"1,000-job sweep <= 75 s": s["seconds"] <= TARGETS["sweep_1000_seconds_max"],
           "grid check of 10,000 jobs <= 30 s": g["seconds"] <= TARGETS["grid_check_10000_seconds_max"],
           "gradlab-compare on 1,000 runs <= 15 s": s["compare_seconds"] <= TARGETS["compare_1000_seconds_max"],
           "training 10,000 configurations x 3,000 epochs <= 8 s (the issue's contiguous-axis figure)":
               r["fast_axis"]["gradlab_seconds"] <= TARGETS["fit_10000_seconds_max"],
           "1,000-job sweep: every child recorded, none RUNNING, its table on the parent":
               s["left"]["children"] == s["jobs"] and not s["left"]["running"] and s["left"]["table"]}
    if "sweep_10000" in r:
        b = r["sweep_10000"]
        out.update({"10,000-job sweep <= 10 min": b["seconds"] <= TARGETS["sweep_10000_seconds_max"],
                    "10,000-job sweep peak memory < 2 GiB (proportional: shared pages counted once)": b["memory_mib"]["peak_pss_mib"] < TARGETS["sweep_peak_rss_mib_max"],
                    "gradlab-compare on 10,000 runs <= 60 s": b["compare_seconds"] <= TARGETS["compare_10000_seconds_max"],
                    "10,000-job sweep: every child recorded, none RUNNING":
                        b["left"]["children"] == b["jobs"] and not b["left"]["running"]})
    return out


def lines(r: dict, quick: bool) -> list[str]:
    floor = r["floor_seconds_per_run"]
    out = [f"9. scale (MLflow's floor here: create_run + set_terminated {floor * 1e3:.1f} ms a run, fresh SQLite store):"]
    for key in ("sweep", "sweep_10000"):
        if key not in r:
            continue
        s = r[key]
        per_job = s["seconds"] / s["jobs"]
        out += [f"   {s['jobs']:,}-job sweep x {s['epochs']} epochs, everything recorded: {s['seconds']:.1f} s "
                f"({per_job * 1e3:.0f} ms/job, {per_job / floor:.1f}x the floor); peak memory {s['memory_mib']['peak_rss_mib']:.0f} MiB "
                f"resident, {s['memory_mib']['peak_pss_mib']:.0f} MiB proportional",
                f"     left: {s['left']['children']:,} children, {s['left']['running']} RUNNING, table of results: "
                f"{'yes' if s['left']['table'] else 'NO'}",
                f"     gradlab-compare on them: {s['compare_seconds']:.1f} s from the table, "
                f"{s['compare_from_store_seconds']:.1f} s reading the runs from the store"]
    g = r["grid_check"]
    out.append(f"   grid check of {g['jobs']:,} jobs (composition and checks): {g['seconds']:.1f} s, peak memory "
               f"{g['peak_rss_mib']:.0f} MiB")
    f = r["fast_axis"]
    out.append(f"   training {f['configs']:,} configurations x {f['epochs']:,} epochs at once (full batch, gradient "
               f"descent): gradlab {f['gradlab_seconds']:.2f} s ({f['completed']:,} completed, the rest diverged), the "
               f"same descent bare with the configurations on the contiguous axis {f['contiguous_seconds']:.2f} s "
               f"({f['ratio']:.1f}x)")
    if quick:
        return [*out, "   (quick mode: tiny sizes; the targets apply to the full benchmark)"]
    return out + [f"   {'PASS' if ok else 'MISS'}  {name}" for name, ok in r["verdicts"].items()]


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["check"]:
        print(json.dumps(check(argv[1:])))
        return
    import argparse

    p = argparse.ArgumentParser(prog="python -m gradlab.bench.scale", description="make bench's scale section alone")
    p.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run)")
    p.add_argument("--ten-thousand", action="store_true", help="the 10,000-job sweep too (about 10 minutes more)")
    p.add_argument("--out", help="write the results as JSON here")
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="gradlab-bench-") as tmp:
        r = measure(Path(tmp), a.quick, a.ten_thousand)
    print("\n".join(lines(r, a.quick)))
    if a.out:
        Path(a.out).write_text(json.dumps(r, indent=2))


if __name__ == "__main__":
    main()
