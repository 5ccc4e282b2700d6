"""The training loop. It knows nothing of Hydra or MLflow: it calls `on_log(row)` per recorded epoch.

Conventions, the classic loops':
- Epoch k's row describes the state at its start: the parameters θₖ₋₁, the validation loss at θₖ₋₁
  (computed without a graph), and `train_loss`, the loss seen during epoch k before each update
  (for several batches, their size-weighted mean for mean losses and their sum for sum losses).
  `grad_norm` is the mean over the epoch's batches of the gradient's 2-norm.
- A non-finite loss or gradient stops the run at once, before any update uses it: outcome
  `diverged`, with the step and the reason. Nothing non-finite enters the history.
- With `stop_loss`, the run stops as `converged` after the first epoch whose loss is <= it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from gradlab.problem import Problem

MAX_TRACKED_SCALARS = 8  # parameters are recorded element by element up to this many in all


@dataclass
class History:
    columns: list[str]
    rows: list[list[float]] = field(default_factory=list)
    outcome: str = "running"  # completed | converged | diverged (the caller adds failed | killed)
    epochs_run: int = 0  # epochs whose updates all happened
    stop_step: int | None = None  # the step at which the run diverged
    reason: str | None = None
    seconds: float = 0.0

    def column(self, name: str) -> list[float]:
        i = self.columns.index(name)
        return [r[i] for r in self.rows]


class _NonFinite(Exception):
    def __init__(self, what: str, value: float):
        super().__init__(f"{what} is {value}")


def scalar_names(params: dict) -> list[str]:
    """Names of the parameter elements recorded per epoch: `w` for a single value, `w.0`… else."""
    names = []
    for name, p in params.items():
        n = int(np.prod(p.shape))
        names += [name] if n == 1 else [f"{name}.{i}" for i in range(n)]
    return names if len(names) <= MAX_TRACKED_SCALARS else []


def columns(problem: Problem, params: dict) -> list[str]:
    """The history's columns for this problem: known before training starts."""
    val = ["val_loss"] if problem.val is not None else []
    return ["epoch", "train_loss", *val, "grad_norm", *(f"param.{n}" for n in scalar_names(params))]


def _helpers(problem: Problem, plist: list, track: bool):
    """The per-epoch measurements, specialised once for the backend."""
    if problem.backend.numpy:
        def norm(grads):
            return math.sqrt(sum(float((g * g).sum()) for g in grads))

        def snapshot():
            return np.concatenate([np.ravel(p) for p in plist]).tolist() if track else []

        return norm, snapshot

    def norm(grads):
        return float(torch.linalg.vector_norm(torch.cat([g.reshape(-1) for g in grads])))

    def snapshot():
        return torch.cat([p.detach().reshape(-1) for p in plist]).tolist() if track else []

    return norm, snapshot


def fit(problem: Problem, params: dict, grad_fn, optimizer, *, epochs: int, log_every: int = 1,
        stop_loss: float | None = None, on_log: Callable[[list[float]], None] | None = None,
        history: History | None = None) -> History:
    """Train in place. Pass `history` to keep what was recorded if the loop is interrupted."""
    plist = list(params.values())
    tracked = scalar_names(params)
    has_val = problem.val is not None
    if history is None:
        history = History([])
    history.columns = columns(problem, params)
    norm, snapshot = _helpers(problem, plist, bool(tracked))
    closure_mode = optimizer.needs_closure
    mean = problem.mean
    start = time.perf_counter()
    epoch = 0
    try:
        for epoch in range(1, epochs + 1):
            record = epoch == 1 or epoch == epochs or epoch % log_every == 0
            if record:
                values = snapshot()
                if has_val:
                    with torch.no_grad():
                        val = float(problem.loss(params, problem.val))
                    if not math.isfinite(val):
                        raise _NonFinite("val_loss", val)
            batches = problem.batches()
            total = weights = gnorm = 0.0
            for batch in batches:
                if closure_mode:  # L-BFGS updates inside; this is its first evaluation
                    loss, grads = _closure_step(grad_fn, optimizer, batch)
                else:
                    loss, grads = grad_fn(batch)
                lv = float(loss)
                if not math.isfinite(lv):
                    raise _NonFinite("train_loss", lv)
                if record:
                    g = norm(grads)
                    if not math.isfinite(g):
                        raise _NonFinite("grad_norm", g)
                    gnorm += g
                if not closure_mode:
                    optimizer.step(grads)
                w = len(batch[1]) if (mean and batch is not None) else 1.0
                total += lv * w
                weights += w
            n = len(batches)
            epoch_loss = lv if n == 1 else (total / weights if mean else total)
            history.epochs_run = epoch
            if record:
                row = [epoch, epoch_loss, *((val,) if has_val else ()), gnorm / n, *values]
                history.rows.append(row)
                if on_log is not None:
                    on_log(row)
            if stop_loss is not None and epoch_loss <= stop_loss:
                history.outcome = "converged"
                break
        else:
            history.outcome = "completed"
    except _NonFinite as e:
        history.outcome, history.stop_step, history.reason = "diverged", epoch, f"{e} at step {epoch}"
    finally:
        history.seconds = time.perf_counter() - start
    return history


def _closure_step(grad_fn, optimizer, batch):
    """One step of a closure optimizer (L-BFGS): returns the first evaluation, before any update."""
    first = []

    def closure():
        loss, grads = grad_fn(batch)
        lv = float(loss)
        if not math.isfinite(lv):
            raise _NonFinite("train_loss", lv)
        optimizer.set_grads(grads)
        if not first:
            first.append((loss, list(grads)))
        return loss

    optimizer.step_closure(closure)
    return first[0]
