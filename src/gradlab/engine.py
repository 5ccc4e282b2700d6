"""The training loop. It knows nothing of Hydra or MLflow: it fills a `History` and calls
`on_log(epoch, configs, rows)` per recorded epoch, which may answer with configurations to stop.

Conventions, the classic loops':
- Epoch k's row describes the state at its start: the parameters θₖ₋₁, the validation loss at θₖ₋₁
  (computed without a graph), and `train_loss`, the loss seen during epoch k before each update
  (for several batches, their size-weighted mean for mean losses and their sum for sum losses).
  `grad_norm` is the mean over the epoch's batches of the gradient's 2-norm.
- A non-finite loss or gradient stops the run at once, before any update uses it: outcome
  `diverged`, with the step and the reason. Nothing non-finite enters the history.
- With `stop_loss`, the run stops as `reached_stop_loss` after the first epoch whose loss is <= it.
- A configuration that `on_log` names stops as `pruned` after that epoch (a search gave up on it).
"""

from __future__ import annotations

import math
import time
from array import array
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from gradlab.devices import index
from gradlab.problem import Problem
import gradlab.spill as spill

MAX_TRACKED_SCALARS = 8  # parameters are recorded element by element up to this many in all


@dataclass
class Schedule:
    """How long to train and what to record, the same for every configuration of a batch; the
    loss at which each configuration stops early (None: it does not); how each configuration's
    learning rate moves from epoch to epoch (a schedules.LRSchedule; None: it does not)."""

    epochs: int
    log_every: int = 1
    stop_loss: list[float | None] | None = None
    lr_schedule: object | None = None

    def expected_rows(self) -> int:
        """How many epochs a full run records: the first, every log_every-th, the last."""
        every = self.log_every
        return min(self.epochs, self.epochs // every + (every > 1) + (self.epochs % every != 0))


class History:
    """What one configuration's training recorded: a row per recorded epoch, read by column name.
    Each column is an array of doubles (8 bytes a value, where a list of floats takes 32): a dense
    sweep holds thousands of epochs for hundreds of runs. Beyond SPILL_ROWS rows, the older rows
    go to a file per column (`spill.Spill`), so that a run of millions of epochs holds a bounded amount
    of memory. Nothing outside reads positions."""

    def __init__(self, columns: list[str]):
        if columns[:1] != ["epoch"]:
            raise ValueError("a history's first column is the epoch")
        self.columns = list(columns)
        self.metrics = self.columns[1:]
        self._epochs, self._values = array("q"), [array("d") for _ in self.metrics]  # the rows not yet spilled
        self._spill: spill.Spill | None = None
        self.outcome = "running"  # completed | reached_stop_loss | diverged | pruned (the caller adds failed | killed)
        self.epochs_run = 0  # epochs whose updates all happened
        self.stop_step: int | None = None  # the step at which the run diverged or was pruned
        self.reason: str | None = None
        self.seconds = 0.0

    def append(self, epoch: int, row: list[float]) -> None:
        """One recorded epoch: the metrics' values in column order."""
        self._epochs.append(epoch)
        for values, v in zip(self._values, row):
            values.append(v)
        if len(self._epochs) >= spill.SPILL_ROWS:
            self._spill = self._spill or spill.Spill(len(self.columns))
            self._spill.write([self._epochs, *self._values])
            self._epochs, self._values = array("q"), [array("d") for _ in self.metrics]

    def __len__(self) -> int:
        return (self._spill.rows if self._spill else 0) + len(self._epochs)

    def _parts(self, name: str):
        """A column's values in order, part by part (arrays of at most SPILL_ROWS)."""
        i = self.columns.index(name)
        if self._spill:
            yield from self._spill.read(i)
        yield self._epochs if i == 0 else self._values[i - 1]

    def column(self, name: str) -> list:
        return [v for part in self._parts(name) for v in part]

    def array(self, name: str) -> np.ndarray:
        """A column as a float64 NumPy array (a copy)."""
        return np.concatenate([np.asarray(part, dtype=np.float64) for part in self._parts(name)])

    def at(self, name: str, rows: np.ndarray) -> np.ndarray:
        """A column's values at these (sorted) rows, as float64, reading no more than those."""
        spilled = self._spill.rows if self._spill else 0
        head = self._spill.at(self.columns.index(name), rows[rows < spilled]) if spilled else np.zeros(0)
        tail = np.asarray(self._epochs if name == "epoch" else self._values[self.metrics.index(name)], dtype=np.float64)
        return np.concatenate([head, tail[rows[rows >= spilled] - spilled]])

    def last(self, name: str) -> float:
        return self.at(name, np.array([len(self) - 1]))[0]

    def min(self, name: str) -> float:
        return min(min(part) for part in self._parts(name) if len(part))

    def first_epoch_at_or_below(self, name: str, level: float, stay: bool = False) -> int | None:
        """The epoch of the first row whose `name` is <= level; with `stay`, the first row from
        which every later row is (reached and kept). None if no row qualifies."""
        found = None
        for epochs, values in zip(self._parts("epoch"), self._parts(name)):
            below = np.asarray(values) <= level
            if stay:
                above = np.flatnonzero(~below)
                if len(above):
                    found = None
                    below = below[above[-1] + 1:]
                    epochs = epochs[above[-1] + 1:]
                if found is None and len(below):
                    found = int(epochs[0])
            elif below.any():
                return int(epochs[int(np.argmax(below))])
        return found

    def records(self):
        """Each recorded epoch as {column: value}."""
        for parts in zip(*(self._parts(c) for c in self.columns)):
            for epoch, *row in zip(*parts):
                yield {"epoch": epoch, **dict(zip(self.metrics, row))}

    def table(self) -> dict:
        """What crosses to the recorder: {"columns", "epochs", "values" (one array per metric)},
        and the files of the rows spilled before them ("spilled": a folder of links to them, the
        reader's to delete)."""
        return {"columns": self.columns, "epochs": self._epochs, "values": self._values,
                "spilled": self._spill.handed_over() if self._spill else None}


@dataclass(slots=True)
class Measured:
    """What an epoch measured of the configurations still training, in their order: the training
    loss seen before each update, the gradient's norm, the tracked parameters' values at the
    epoch's start and the validation loss there (None where the epoch is not measured)."""

    losses: list[float]
    norms: list[float]
    values: list[list[float]] | None = None
    vals: list[float] | None = None

    def keep(self, positions: list[int]) -> "Measured":
        def cut(v):
            return None if v is None else [v[i] for i in positions]

        return Measured(cut(self.losses), cut(self.norms), cut(self.values), cut(self.vals))

    def rows(self, lrs: list[float] | None) -> list[list[float]]:
        """The history's rows, in the order of `columns`: train_loss, val_loss, grad_norm, lr, params."""
        values = self.values if lrs is None else [[lr, *v] for lr, v in zip(lrs, self.values)]
        if self.vals is None:
            return [[loss, g, *v] for loss, g, v in zip(self.losses, self.norms, values)]
        return [[loss, val, g, *v] for loss, val, g, v in zip(self.losses, self.vals, self.norms, values)]


NOTHING = Measured([], [], [], [])  # every configuration has left


class _NonFinite(Exception):
    def __init__(self, what: str, value: float):
        super().__init__(f"{what} is {value}")
        self.what, self.value = what, value


def scalar_names(model) -> list[str]:
    """Names of the parameter elements recorded per epoch: `w` for a single value, `w.0`… else."""
    names = []
    for name, shape in model.shapes.items():
        n = math.prod(shape)
        names += [name] if n == 1 else [f"{name}.{i}" for i in range(n)]
    return names if len(names) <= MAX_TRACKED_SCALARS else []


def columns(problem: Problem, lr: bool = False) -> list[str]:
    """The history's columns for this problem: known before training starts. `lr`: the learning
    rate each epoch's updates used (where a schedule moves it)."""
    val = ["val_loss"] if problem.val is not None else []
    return ["epoch", "train_loss", *val, "grad_norm", *(["lr"] if lr else []),
            *(f"param.{n}" for n in scalar_names(problem.model))]


SMALL = 64  # up to this many values in all, the loop reads them out rather than calling torch ops
# epoch, configurations, their rows -> the configurations to stop now (pruned), if any
OnLog = Callable[[int, list[int], list[list[float]]], "list[int] | None"]


class _Reader:
    """Reads each configuration's values out of a list of tensors or arrays (parameters,
    gradients) the cheapest way for their sizes, chosen once: .item() and .tolist() cost ~0.2 µs,
    a torch op 1-2 µs, and this runs every epoch."""

    def __init__(self, sizes: list[int]):  # elements per configuration of each tensor
        self.scalars = all(k == 1 for k in sizes)
        self.total = sum(sizes)

    def rows(self, tensors: list, configs: int) -> list[list[float]]:
        if self.scalars and configs == 1:
            return [[t.item() for t in tensors]]
        if self.scalars:
            return [list(r) for r in zip(*[t.reshape(-1).tolist() for t in tensors])]
        parts = [t.reshape(configs, -1).tolist() for t in tensors]
        return [[v for part in parts for v in part[c]] for c in range(configs)]

    def norms(self, tensors: list, configs: int) -> list[float]:
        """Each configuration's 2-norm over all of the tensors."""
        if configs * self.total <= SMALL:
            return [math.hypot(*row) for row in self.rows(tensors, configs)]
        if isinstance(tensors[0], np.ndarray):
            return np.sqrt(sum((t.reshape(configs, -1) ** 2).sum(1) for t in tensors)).tolist()
        return torch.linalg.vector_norm(torch.cat([t.reshape(configs, -1) for t in tensors], 1), dim=1).tolist()


class _Batch:
    """The configurations still training: which they are, their problem, parameters and
    optimizer. `drop` takes some out (diverged, at their stop_loss) after noting their final values."""

    def __init__(self, problem: Problem, params: dict, optimizer, histories: list[History], lr_schedule=None):
        self.problem, self.params, self.optimizer, self.histories = problem, params, optimizer, histories
        self.lr_schedule = lr_schedule
        self.configs = list(range(problem.configs))  # their indices in the original batch
        # Epochs whose updates all happened, for those still training: written into their histories
        # as they leave (drop) or training stops, not every epoch (a loop over thousands, per epoch).
        self.epochs_done = 0
        self.finals: dict[int, dict] = {}
        self.tracked = bool(scalar_names(problem.model))
        self.reader = _Reader([math.prod(shape) for shape in problem.model.layout.values()])
        self.start = time.perf_counter()

    def snapshot(self) -> list[list[float]]:
        """Each configuration's tracked parameter values."""
        if not self.tracked:
            return [[] for _ in self.configs]
        return self.reader.rows(list(self.params.values()), len(self.configs))  # .item()/.tolist() need no detach

    def drop(self, positions: list[int]) -> None:
        """Take the configurations at these positions out, keeping their final parameters."""
        for pos in positions:
            c = self.configs[pos]
            self.finals[c] = {k: _array(v[pos]) for k, v in self.params.items()}
            self.histories[c].seconds = time.perf_counter() - self.start
            self.histories[c].epochs_run = self.epochs_done
        dropped = set(positions)  # made once: in the comprehension's condition it was made again for every i
        keep = [i for i in range(len(self.configs)) if i not in dropped]
        self.configs = [self.configs[i] for i in keep]
        if not keep:
            return
        self.problem = self.problem.keep(keep)
        self.params = {k: _cut(v, keep) for k, v in self.params.items()}
        if hasattr(self.optimizer, "keep"):
            self.optimizer.keep(keep, list(self.params.values()))
        if self.lr_schedule is not None:
            self.lr_schedule.keep(keep)

    def finish(self) -> dict[int, dict]:
        self.drop(list(range(len(self.configs))))
        return self.finals


def _array(v) -> np.ndarray:
    """A copy as a float64 NumPy array."""
    return v.detach().cpu().double().numpy().copy() if isinstance(v, torch.Tensor) else np.array(v, dtype=np.float64)


def _cut(v, keep: list[int]):
    """A parameter for the configurations kept: a new leaf where autograd needs one."""
    if not isinstance(v, torch.Tensor):
        return v[keep]
    return v.detach()[index(keep, v.device)].requires_grad_(v.requires_grad)


def fit(problem: Problem, params: dict, grad_fn, optimizer, schedule: Schedule, histories: list[History],
        on_log: OnLog | None = None, between_epochs: Callable[[], None] | None = None) -> list[dict]:
    """Train a batch of configurations, filling `histories` (the caller's: what was recorded
    survives an interrupt). `between_epochs` is called after each epoch is recorded: what it
    raises stops training there, with every history whole. Returns each configuration's final
    parameters (float64 arrays in the model's layout)."""
    with np.errstate(over="ignore", invalid="ignore"):  # NumPy's overflows are found and stopped below, silently
        return _fit(problem, params, grad_fn, optimizer, schedule, histories, on_log, between_epochs or _nothing)


def _nothing() -> None:
    pass


def _fit(problem: Problem, params: dict, grad_fn, optimizer, schedule: Schedule, histories: list[History],
         on_log: OnLog | None, between_epochs: Callable[[], None]) -> list[dict]:
    lr_schedule = schedule.lr_schedule
    batch = _Batch(problem, params, optimizer, histories, lr_schedule)
    if lr_schedule is not None:  # the first epoch's lr, as torch's scheduler sets it when it is made
        optimizer.set_lr(lr_schedule.lr)
    stop = schedule.stop_loss if schedule.stop_loss and any(v is not None for v in schedule.stop_loss) else None
    stopping = stop is not None
    has_val = problem.val is not None
    try:
        for epoch in range(1, schedule.epochs + 1):
            record = epoch == 1 or epoch == schedule.epochs or epoch % schedule.log_every == 0
            # With stop_loss any epoch may be the last, whose row is always kept: measure each one.
            measure = record or stopping
            values = batch.snapshot() if measure else None
            vals = _val_losses(batch, histories, epoch, values) if measure and has_val else None
            if not batch.configs:
                break
            measured = _epoch(batch, grad_fn, histories, epoch, measure, Measured([], [], values, vals))
            batch.epochs_done = epoch
            lrs = None
            if lr_schedule is not None and batch.configs:
                lrs = lr_schedule.lr.tolist()  # what this epoch's updates used
                if epoch < schedule.epochs:  # the lr after the last epoch is never used
                    _next_lr(batch, measured.losses)
            if record or stopping:
                _log(batch, histories, epoch, measured, lrs, record, stop, on_log)
            if not batch.configs:
                break
            between_epochs()
        for c in batch.configs:
            histories[c].outcome = "completed"
    finally:  # interrupted: those still training have run this long
        for c in batch.configs:
            histories[c].seconds = time.perf_counter() - batch.start
            histories[c].epochs_run = batch.epochs_done
    finals = batch.finish()
    return [finals[c] for c in range(problem.configs)]


def _val_losses(batch: _Batch, histories, epoch: int, values) -> list[float]:
    """Each configuration's validation loss before the epoch's updates (no graph); a non-finite
    one stops its configuration here."""
    with torch.no_grad():
        vals = batch.problem.loss(batch.params, batch.problem.val).tolist()
    bad = [i for i, v in enumerate(vals) if not math.isfinite(v)]
    if bad:
        _diverge(batch, histories, epoch, bad, "val_loss", [vals[i] for i in bad])
        gone = set(bad)
        keep = [i for i in range(len(vals)) if i not in gone]
        vals[:] = [vals[i] for i in keep]
        values[:] = [values[i] for i in keep]
    return vals


def _epoch(batch: _Batch, grad_fn, histories, epoch: int, measure: bool, start: Measured) -> Measured:
    """One epoch's steps for every configuration still training: each one's training loss (the
    size-weighted mean of its batches' for mean losses, their sum for sum losses) and its mean
    gradient norm. A configuration whose loss or gradient turns non-finite stops before any
    update uses it; the others go on."""
    batches = batch.problem.batches()
    if len(batches) == 1:  # full batch: one step, nothing to accumulate
        return _step(batch, grad_fn, histories, epoch, measure, batches[0], start)
    weights = [data[1].shape[1] if batch.problem.mean else 1.0 for data in batches]
    total = gsum = None
    # The configurations the epoch's minibatches have rows for, by position (a dict: list.index
    # over thousands of configurations, for each of them, was quadratic).
    rows_for = {c: i for i, c in enumerate(batch.configs)}
    for data, w in zip(batches, weights):
        before = list(batch.configs)
        if len(before) < len(rows_for):  # some left at an earlier minibatch: so do their rows
            data = _rows(data, [rows_for[c] for c in before])
        start = _step(batch, grad_fn, histories, epoch, measure, data, start)
        if total is not None and len(batch.configs) < len(before):  # some left the batch: so do their sums
            at = {c: i for i, c in enumerate(before)}
            kept = [at[c] for c in batch.configs]
            total, gsum = [total[i] for i in kept], [gsum[i] for i in kept]
        if not batch.configs:
            return NOTHING
        total = [v * w for v in start.losses] if total is None else [t + v * w for t, v in zip(total, start.losses)]
        gsum = start.norms if gsum is None else [a + b for a, b in zip(gsum, start.norms)]
    mean = sum(weights) if batch.problem.mean else 1.0
    return Measured([t / mean for t in total], [g / len(batches) for g in gsum], start.values, start.vals)


def _rows(data, positions: list[int]):
    """A minibatch's rows for the configurations at these positions (torch tensors or NumPy arrays)."""
    if isinstance(data[0], torch.Tensor):
        rows = index(positions, data[0].device)
        return tuple(t[rows] for t in data)
    return tuple(t[positions] for t in data)


def _step(batch: _Batch, grad_fn, histories, epoch: int, measure: bool, data, start: Measured) -> Measured:
    """One update on one batch of data: each configuration's loss before it and gradient norm
    (with `start`'s values and validation losses, for the configurations that go on)."""
    if batch.optimizer.needs_closure:  # L-BFGS updates inside; this is its first evaluation
        try:
            loss, grads = _closure_step(grad_fn, batch, data)
        except _NonFinite as e:
            _diverge(batch, histories, epoch, [0], e.what, [e.value])
            return NOTHING
    else:
        loss, grads = grad_fn(batch.problem, batch.params, data)
    lv = loss.tolist()
    gn = batch.reader.norms(grads, len(lv)) if measure else [0.0] * len(lv)
    if not all(map(math.isfinite, lv)) or not all(map(math.isfinite, gn)):
        finite = np.isfinite(np.array(lv)) & np.isfinite(np.array(gn))  # in NumPy: thousands of configurations
        bad, keep = np.flatnonzero(~finite).tolist(), np.flatnonzero(finite).tolist()
        _diverge(batch, histories, epoch, bad, ["train_loss" if not math.isfinite(lv[i]) else "grad_norm" for i in bad],
                 [lv[i] if not math.isfinite(lv[i]) else gn[i] for i in bad])
        if not batch.configs:
            return NOTHING
        kept = index(keep, grads[0].device) if isinstance(grads[0], torch.Tensor) else keep
        grads = [g[kept] for g in grads]  # one index tensor: a list of thousands is converted per use
        if not batch.optimizer.needs_closure:
            batch.optimizer.step(grads)
        return Measured(lv, gn, start.values, start.vals).keep(keep)
    if not batch.optimizer.needs_closure:
        batch.optimizer.step(grads)
    return Measured(lv, gn, start.values, start.vals)


def _next_lr(batch: _Batch, losses: list[float]) -> None:
    """Step the schedule after the epoch's updates, as torch's documented loop does; a plateau
    reads the validation loss at the new parameters where there is a split (torch's loop
    validates after training), else the epoch's training loss."""
    loss = None
    if batch.lr_schedule.reads_loss:
        if batch.problem.val is None:
            loss = losses
        else:
            with torch.no_grad():
                loss = batch.problem.loss(batch.params, batch.problem.val).tolist()
    batch.lr_schedule.step(loss)
    batch.optimizer.set_lr(batch.lr_schedule.lr)


def _diverge(batch: _Batch, histories, epoch: int, positions: list[int], what, values) -> None:
    whats = what if isinstance(what, list) else [what] * len(positions)
    for pos, w, v in zip(positions, whats, values):
        h = histories[batch.configs[pos]]
        h.outcome, h.stop_step, h.reason = "diverged", epoch, f"{w} is {v} at step {epoch}"
    batch.drop(positions)


def _log(batch: _Batch, histories, epoch: int, measured: Measured, lrs: list[float] | None, record: bool, stop,
         on_log) -> None:
    """The epoch's rows, for the configurations that log it; those at their stop_loss stop."""
    configs = batch.configs
    losses = measured.losses
    done = [i for i, c in enumerate(configs) if stop[c] is not None and losses[i] <= stop[c]] if stop else []
    if not record and not done:
        return
    rows = measured.rows(lrs)
    if not record:
        configs, rows = [configs[i] for i in done], [rows[i] for i in done]
    for c, row in zip(configs, rows):
        histories[c].append(epoch, row)
    for i in done:  # before on_log: a run at its stop_loss is not a search's to prune
        histories[batch.configs[i]].outcome = "reached_stop_loss"
    pruned = (on_log(epoch, list(configs), rows) or []) if on_log is not None else []
    for c in pruned:
        h = histories[c]
        if h.outcome == "running":
            h.outcome, h.stop_step, h.reason = "pruned", epoch, f"pruned at step {epoch}"
    if done or pruned:
        batch.drop([i for i, c in enumerate(batch.configs) if histories[c].outcome != "running"])


def _closure_step(grad_fn, batch: _Batch, data):
    """One step of a closure optimizer (L-BFGS, one configuration): returns the first
    evaluation, before any update."""
    first = []

    def closure():
        loss, grads = grad_fn(batch.problem, batch.params, data)
        lv = float(loss.sum())
        if not math.isfinite(lv):
            raise _NonFinite("train_loss", lv)
        batch.optimizer.set_grads(grads)
        if not first:  # copies: a gradient method may reuse its buffers at the next evaluation
            first.append((loss.detach().clone(), [g.detach().clone() for g in grads]))
        return loss.sum()

    batch.optimizer.step_closure(closure)
    return first[0]
