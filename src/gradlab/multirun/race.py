"""Optimizers racing to a minimum: for each two-parameter objective a sweep ran (a problem of its
ranking), every optimizer's best run drawn as a path over the function's contour, one figure per
function (the parent's race/<function>.png, drawn by the recorder with plots.race).

The paths are the runs' `param.*` step metrics as recorded (at most tracking.max_points points
each, the final parameters last); the contour is the function itself, imported by its
model.target in this process, which ran the sweep: nothing is imported that the sweep did not run.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from gradlab import ranking
from gradlab.options import ConfigError

GRID = 80  # contour resolution per axis
PAD = 0.15  # the span around the paths, the starts and the optimum


def _names(child) -> list[str] | None:
    """The two parameters of a run of a two-parameter objective, in order; else None."""
    names = sorted(k[len("param."):] for k in child.metrics if k.startswith("param."))
    if child.params.get("model.name") != "objective" or len(names) != 2:
        return None
    given = child.params.get("model.names")
    return list(given) if isinstance(given, list) and sorted(given) == names else _ordered(names)


def _ordered(names: list[str]) -> list[str]:
    """x before y, theta.0 before theta.1 (the default names sort as θ's entries are ordered)."""
    return sorted(names, key=lambda n: ("xyz".index(n) if n in ("x", "y", "z") else 3, n))


def _label(params: dict) -> str:
    """adam lr=0.01; sgd m0.9 lr=0.01 (sgd_momentum is sgd with a momentum)."""
    name, momentum, lr = params.get("optimizer.name"), params.get("optimizer.momentum"), params.get("optimizer.lr")
    said = f"{name} m{float(momentum):g}" if momentum not in (None, 0, 0.0, "0.0") else str(name)
    return f"{said} lr={float(lr):g}" if lr is not None else said


def _path(ask: Callable, run_id: str, names: list[str]) -> np.ndarray | None:
    """(k, 2): the recorded parameters step by step, where both are recorded."""
    series = [dict(ask("metric_history", run_id, f"param.{n}")) for n in names]
    steps = sorted(set(series[0]) & set(series[1]))
    path = np.array([[series[0][s], series[1][s]] for s in steps], dtype=float)
    return path if len(path) and np.isfinite(path).all() else None


def _contour(target: str, names: list[str], points: np.ndarray) -> dict | None:
    """The function over a padded box around `points` (k, 2)."""
    from gradlab import targets
    from gradlab.usermodels import UserObjective

    lo, hi = points.min(0), points.max(0)
    width = np.where(hi > lo, hi - lo, np.maximum(np.abs(hi), 1.0))
    lo, hi = lo - PAD * width, hi + PAD * width
    a, b = np.meshgrid(np.linspace(lo[0], hi[0], GRID), np.linspace(lo[1], hi[1], GRID))
    try:
        f = UserObjective(targets.resolve("model.target", target), [0.0, 0.0], names, None)
    except ConfigError:  # the file moved or changed since its runs: no contour to draw
        return None
    z = np.asarray(f.value({names[0]: a.ravel(), names[1]: b.ravel()}), dtype=float).reshape(a.shape)
    return {"grid_a": a, "grid_b": b, "grid_loss": z}


def data(name: str, children: list, entries: list, ask: Callable) -> dict:
    """problem -> what plots.race draws: the contour, each optimizer's best run's path (a run
    that diverged is left out: its path would dwarf the others), the optimum."""
    by_id = {c.id: c for c in children}
    out = {}
    for problem, runs in ranking.ranked(entries).items():
        first = by_id[runs[0].run_id]
        names = _names(first)
        target = first.params.get("model.target")
        if names is None or not target:
            continue
        paths, seen = [], set()
        for e in runs:  # best first: each optimizer's first is its best
            c = by_id[e.run_id]
            optimizer = str(c.params.get("optimizer.name"))
            if optimizer in seen or e.outcome == "diverged" or not e.has_result:
                continue
            seen.add(optimizer)
            path = _path(ask, c.id, names)
            if path is not None:
                paths.append({"label": _label(c.params), "path": path, "at_optimum": c.metrics.get("at_optimum") == 1.0})
        if not paths:
            continue
        optimum = first.params.get("model.optimum")
        optimum = [float(v) for v in optimum] if isinstance(optimum, list) and len(optimum) == 2 else None
        points = np.vstack([p["path"] for p in paths] + ([np.array([optimum])] if optimum else []))
        contour = _contour(str(target), names, points)
        if contour is None:
            continue
        function = str(target).rpartition(":")[2]
        out[function] = {**contour, "paths": paths, "optimum": optimum, "names": names,
                         "title": f"Sweep {name}: {function}, each optimizer's best run"}
    return out
