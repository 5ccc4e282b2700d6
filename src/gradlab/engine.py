"""The training loop. It knows nothing of Hydra or MLflow: it fills a `History` and calls
`on_log(epoch, configs, rows)` per recorded epoch.

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
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from gradlab.problem import Problem

MAX_TRACKED_SCALARS = 8  # parameters are recorded element by element up to this many in all


@dataclass
class Schedule:
    """How long to train and what to record: the same for every configuration of a batch."""

    epochs: int
    log_every: int = 1
    stop_loss: float | None = None

    def expected_rows(self) -> int:
        return 1 + self.epochs // self.log_every


class History:
    """What one configuration's training recorded: a row per recorded epoch, read by column name.
    Rows are kept as lists inside (cheap to append in the loop); nothing outside reads positions."""

    def __init__(self, columns: list[str]):
        if columns[:1] != ["epoch"]:
            raise ValueError("a history's first column is the epoch")
        self.columns = list(columns)
        self.metrics = self.columns[1:]
        self._epochs: list[int] = []
        self._rows: list[list[float]] = []  # the metrics of each recorded epoch, in column order
        self.outcome = "running"  # completed | converged | diverged (the caller adds failed | killed)
        self.epochs_run = 0  # epochs whose updates all happened
        self.stop_step: int | None = None  # the step at which the run diverged
        self.reason: str | None = None
        self.seconds = 0.0

    def append(self, epoch: int, row: list[float]) -> None:
        self._epochs.append(epoch)
        self._rows.append(row)

    def __len__(self) -> int:
        return len(self._epochs)

    def column(self, name: str) -> list[float]:
        if name == "epoch":
            return list(self._epochs)
        i = self.metrics.index(name)
        return [r[i] for r in self._rows]

    def records(self):
        """Each recorded epoch as {column: value}."""
        for epoch, row in zip(self._epochs, self._rows):
            yield {"epoch": epoch, **dict(zip(self.metrics, row))}

    def table(self) -> dict:
        """As plain lists: {"columns", "epochs", "rows"} (what crosses to the recorder)."""
        return {"columns": self.columns, "epochs": self._epochs, "rows": self._rows}


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


SMALL = 64  # up to this many values in all, the loop reads them out rather than calling torch ops


def _values(t) -> list[float]:
    """A tensor's or array's values as floats: .tolist() costs ~0.2 µs, a torch op ~2 µs."""
    if t.ndim == 0:
        return [t.item()]
    return t.tolist() if t.ndim == 1 else t.reshape(-1).tolist()


def _helpers(problem: Problem, plist: list, track: bool):
    """The per-epoch measurements, chosen once: the gradient's 2-norm and the parameter values."""
    if all(int(np.prod(p.shape)) == 1 for p in plist):  # scalars (w, b; x, y): one .item() each
        def norm(grads):
            return math.hypot(*[g.item() for g in grads])

        def snapshot():
            return [p.item() for p in plist] if track else []

        return norm, snapshot
    if sum(int(np.prod(p.shape)) for p in plist) <= SMALL:
        def norm(grads):
            return math.hypot(*[v for g in grads for v in _values(g)])
    elif problem.backend.numpy:
        def norm(grads):
            return math.sqrt(sum(float((g * g).sum()) for g in grads))
    else:
        def norm(grads):
            return float(torch.linalg.vector_norm(torch.cat([g.reshape(-1) for g in grads])))

    def snapshot():
        return [v for p in plist for v in _values(p)] if track else []

    return norm, snapshot


OnLog = Callable[[int, list[int], list[list[float]]], None]  # epoch, configurations, their rows
ONLY = [0]  # the configurations of a batch of one


def fit(problem: Problem, params: dict, grad_fn, optimizer, schedule: Schedule, history: History,
        on_log: OnLog | None = None) -> History:
    """Train in place, filling `history` (the caller's: what was recorded survives an interrupt)."""
    epochs, log_every, stop_loss = schedule.epochs, schedule.log_every, schedule.stop_loss
    plist = list(params.values())
    tracked = scalar_names(params)
    has_val = problem.val is not None
    norm, snapshot = _helpers(problem, plist, bool(tracked))
    closure_mode = optimizer.needs_closure
    mean = problem.mean

    def one_batch(batch, record: bool) -> tuple[float, float]:
        """A step on one batch: its loss (before the update) and gradient norm (if recording)."""
        if closure_mode:  # L-BFGS updates inside; this is its first evaluation
            loss, grads = _closure_step(grad_fn, optimizer, batch)
        else:
            loss, grads = grad_fn(batch)
        lv = float(loss)
        if not math.isfinite(lv):
            raise _NonFinite("train_loss", lv)
        g = 0.0
        if record:
            g = norm(grads)
            if not math.isfinite(g):
                raise _NonFinite("grad_norm", g)
        if not closure_mode:
            optimizer.step(grads)
        return lv, g

    start = time.perf_counter()
    epoch = 0
    try:
        for epoch in range(1, epochs + 1):
            record = epoch == 1 or epoch == epochs or epoch % log_every == 0
            # With stop_loss any epoch may be the last, whose row is always kept: measure each one.
            measure = record or stop_loss is not None
            if measure:
                values = snapshot()
                if has_val:
                    with torch.no_grad():
                        val = float(problem.loss(params, problem.val))
                    if not math.isfinite(val):
                        raise _NonFinite("val_loss", val)
            batches = problem.batches()
            if len(batches) == 1:
                epoch_loss, gnorm = one_batch(batches[0], measure)
            else:
                total = weights = gsum = 0.0
                for batch in batches:
                    lv, g = one_batch(batch, measure)
                    w = batch[1].shape[0] if mean else 1.0
                    total, weights, gsum = total + lv * w, weights + w, gsum + g
                epoch_loss, gnorm = (total / weights if mean else total), gsum / len(batches)
            history.epochs_run = epoch
            converged = stop_loss is not None and epoch_loss <= stop_loss
            if record or converged:
                row = [epoch_loss, val, gnorm, *values] if has_val else [epoch_loss, gnorm, *values]
                history.append(epoch, row)
                if on_log is not None:
                    on_log(epoch, ONLY, [row])
            if converged:
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
        if not first:  # copies: a gradient method may reuse its buffers at the next evaluation
            first.append((loss.detach().clone(), [g.detach().clone() for g in grads]))
        return loss

    optimizer.step_closure(closure)
    return first[0]
