"""Issue 23's targets, on a Slurm cluster that is up (`make cluster`, then `. .cluster/env`):
`python -m gradlab.bench --cluster` (CI's bench starts no cluster, so it is opt in).

The dense grid (sweeps/dense_grid.yaml, 240 jobs), every run recorded into the cluster's tracking
server, whole processes from submission to the sweep's end:
1. through Slurm with gradlab's launcher (`hydra/launcher=batched_slurm`, at most 4 tasks), against
   the same grid with the local batched launcher (target: within 2x), alternating which goes first;
2. through Hydra's `hydra/launcher=submitit_slurm` (one Slurm task per job; target: at least 5x
   slower than ours). On a small cluster that takes long: `--cluster-submitit-jobs N` runs the
   first N jobs' worth of learning rates of the grid (all optimizers and scalings) and the report
   scales its time per job to the 240, saying so.

`--quick` uses one optimizer and scaling of the grid (20 jobs, 100 epochs).

`--cluster-2000` runs, instead, the 2,000-job sweep (4 optimizers x 25 learning rates that do not diverge x 20
seeds, float64, 100 epochs) through `batched_slurm` with 4 tasks into the tracking server, and
the same sweep with the local batched launcher into a fresh SQLite store: every child FINISHED,
each job once, and every final metric of each job equal to the local run's within 1e-9.
"""

from __future__ import annotations

import math
import os
import statistics
import sys
import uuid
from pathlib import Path

TARGETS = {"cluster_slurm_vs_local_ratio_max": 2.0, "cluster_submitit_slowdown_min": 5.0, "cluster_2000_rel_tol": 1e-9}
GRID = ["-cd", "sweeps", "-cn", "dense_grid"]
LRS = "1e-4,1.8e-4,3.4e-4,6.2e-4,1.1e-3,2.1e-3,3.8e-3,7e-3,1.3e-2,2.3e-2,4.3e-2,7.8e-2,0.14,0.26,0.48,0.89,1.6,3,5.5,10".split(",")


def needs() -> str:
    """The tracking server's URI; a one-line exit where the cluster's exports are missing."""
    uri, conf = os.environ.get("MLFLOW_TRACKING_URI", ""), os.environ.get("SLURM_CONF", "")
    if not uri.startswith("http") or not conf or not Path(conf).is_file():
        raise SystemExit("bench: --cluster needs a cluster up and its exports: make cluster, then `. .cluster/env` "
                         "(SLURM_CONF and an http MLFLOW_TRACKING_URI)")
    return uri


def run(tmp: Path, quick: bool, reps: int, timed, submitit_jobs: int | None = None) -> dict:
    uri = needs()
    py = sys.executable
    small = ["optimizer=gd", "data.scaling=factor", "train.epochs=100"] if quick else []
    jobs = 20 if quick else 240
    tag = uuid.uuid4().hex[:6]

    def sweep(launcher: list[str], name: str, extra: list[str] = ()) -> tuple[float, str]:
        d = tmp / name
        experiment = f"bench-{name}-{tag}"
        seconds = timed([py, "-m", "gradlab", "-m", *GRID, *small, *extra, *launcher, f"tracking.experiment={experiment}",
                         f"hydra.sweep.dir={d}/ms"], {"MLFLOW_TRACKING_URI": uri})[0]
        return seconds, experiment

    slurm_launcher = ["hydra/launcher=batched_slurm", "hydra.launcher.tasks=4"]
    samples: dict[str, list[float]] = {"slurm": [], "local": []}
    experiments = {}
    for rep in range(reps):
        order = ("slurm", "local") if rep % 2 == 0 else ("local", "slurm")
        for side in order:
            launcher = slurm_launcher if side == "slurm" else ["hydra/launcher=batched"]
            seconds, experiments[side] = sweep(launcher, f"{side}{rep}")
            samples[side].append(seconds)
    n_lrs = len(LRS) if submitit_jobs is None else max(1, min(len(LRS), submitit_jobs // (1 if quick else 12)))
    subset = [f"optimizer.lr={','.join(LRS[:n_lrs])}"] if n_lrs < len(LRS) else []
    sub_jobs = n_lrs * (1 if quick else 12)
    sub_seconds, experiments["submitit"] = sweep(["hydra/launcher=submitit_slurm", "hydra.launcher.timeout_min=60"],
                                                 "submitit", subset)
    s, loc = statistics.median(samples["slurm"]), statistics.median(samples["local"])
    per_job = sub_seconds / sub_jobs
    return {"jobs": jobs, "repetitions": reps, "slurm_seconds": s, "local_seconds": loc, "slurm_vs_local": s / loc,
            "slurm_all": [round(x, 1) for x in samples["slurm"]], "local_all": [round(x, 1) for x in samples["local"]],
            "submitit_jobs": sub_jobs, "submitit_seconds": sub_seconds, "submitit_seconds_per_job": per_job,
            "submitit_seconds_for_all": per_job * jobs, "submitit_scaled": sub_jobs < jobs,
            "submitit_vs_slurm": per_job * jobs / s,
            "finished": {side: _finished(uri, e) for side, e in experiments.items()}}


def two_thousand(tmp: Path, quick: bool, timed) -> dict:
    """The 2,000-job sweep through Slurm into the tracking server and locally into SQLite, compared."""
    import numpy as np

    uri = needs()
    seeds = 2 if quick else 20
    rates = ",".join(f"{v:.3g}" for v in np.logspace(-4, -0.5, 25))
    tag = uuid.uuid4().hex[:6]
    grid = [*GRID, "optimizer=gd,sgd_momentum,adam,rmsprop", f"optimizer.lr={rates}", f"train.seed=range(0,{seeds})",
            "data.scaling=factor", "train.dtype=float64", f"train.epochs={20 if quick else 100}"]
    sides = {"slurm": (["hydra/launcher=batched_slurm", "hydra.launcher.tasks=4"], uri),
             "local": (["hydra/launcher=batched"], f"sqlite:///{tmp / 'two-thousand.db'}")}
    out: dict = {"jobs": 4 * 25 * seeds}
    children = {}
    for side, (launcher, store_uri) in sides.items():
        experiment = f"bench-2000-{side}-{tag}"
        out[f"{side}_seconds"] = timed([sys.executable, "-m", "gradlab", "-m", *grid, *launcher, f"tracking.experiment={experiment}",
                                        f"hydra.sweep.dir={tmp}/2000-{side}"], {"MLFLOW_TRACKING_URI": store_uri})[0]
        children[side] = _children(store_uri, experiment)
    slurm, local = children["slurm"], children["local"]
    out["children"] = sum(len(runs) for runs in slurm.values())
    out["jobs_once"] = sum(len(runs) == 1 for runs in slurm.values())
    out["finished"] = sum(r.status == "FINISHED" for runs in slurm.values() for r in runs)
    out["max_rel_difference"] = max((_difference(runs[0].metrics, local[job][0].metrics if job in local else {})
                                     for job, runs in slurm.items()), default=math.inf)
    out["local_jobs"] = sum(len(runs) == 1 for runs in local.values())
    return out


def _difference(mine: dict, theirs: dict) -> float:
    """The largest relative difference between two runs' final metrics (inf where their keys differ)."""
    keys = set(mine) - {"train_seconds"}
    if keys != set(theirs) - {"train_seconds"}:
        return math.inf
    worst = 0.0
    for k in keys:
        a, b = mine[k], theirs[k]
        if a == b or (math.isnan(a) and math.isnan(b)):
            continue
        worst = max(worst, abs(a - b) / max(abs(b), 1e-12))
    return worst


def _children(uri: str, experiment: str) -> dict[str, list]:
    """The children of the latest sweep in `experiment`, by their job's overrides."""
    from gradlab.tracking import Store, query

    store = Store(uri)
    found: dict[str, list] = {}
    for c in query.children(store, query.latest_sweep(store, experiment).id):
        job = " ".join(sorted(o for o in c.tag("overrides", "").split() if not o.startswith("tracking.experiment")))
        found.setdefault(job, []).append(c)
    return found


def _finished(uri: str, experiment: str) -> int:
    """Children of the sweep recorded FINISHED or FAILED (diverged), none left RUNNING."""
    from gradlab.tracking import Store, query

    store = Store(uri)
    kids = query.children(store, query.latest_sweep(store, experiment).id)
    return sum(k.status in ("FINISHED", "FAILED") and k.outcome in ("completed", "diverged", "reached_stop_loss")
               for k in kids)


def verdicts(r: dict) -> dict:
    out = {}
    if "cluster" in r:
        c = r["cluster"]
        out = {"cluster: Slurm (<= 4 tasks) within 2x of the local batched launcher": c["slurm_vs_local"] <= 2.0,
               "cluster: submitit's task per job >= 5x slower": c["submitit_vs_slurm"] >= 5.0}
    if "two_thousand" in r:
        t = r["two_thousand"]
        out[f"cluster: the {t['jobs']:,}-job sweep through Slurm, every child FINISHED once, results equal to local "
            "(1e-9)"] = (t["children"] == t["jobs"] == t["jobs_once"] == t["finished"] == t["local_jobs"]
                         and t["max_rel_difference"] <= TARGETS["cluster_2000_rel_tol"])
    return out


def lines(r: dict) -> list[str]:
    if "cluster" not in r:
        return two_thousand_lines(r)
    c = r["cluster"]
    scaled = f" ({c['submitit_jobs']} jobs run, {c['submitit_seconds']:.0f} s, scaled to {c['jobs']})" if c["submitit_scaled"] else ""
    return [f"9. the dense grid ({c['jobs']} jobs) on the local Slurm cluster, recorded into its tracking server "
            f"(medians of {c['repetitions']}):",
            f"   batched_slurm (<= 4 tasks) {c['slurm_seconds']:.1f} s   local batched launcher {c['local_seconds']:.1f} s   "
            f"ratio {c['slurm_vs_local']:.2f}x (target <= 2)",
            f"   submitit_slurm (a task per job) {c['submitit_seconds_for_all']:.0f} s{scaled}   "
            f"{c['submitit_vs_slurm']:.1f}x slower than batched_slurm (target >= 5)",
            f"   children recorded: {c['finished']}", *two_thousand_lines(r), ""]


def two_thousand_lines(r: dict) -> list[str]:
    if "two_thousand" not in r:
        return []
    t = r["two_thousand"]
    return [f"   the {t['jobs']:,}-job sweep (float64): batched_slurm into the tracking server {t['slurm_seconds']:.0f} s, "
            f"local batched into SQLite {t['local_seconds']:.0f} s",
            f"     {t['children']:,} children, {t['jobs_once']:,} jobs recorded once, {t['finished']:,} FINISHED; "
            f"largest relative difference from the local run's metrics {t['max_rel_difference']:.1e}"]
