"""Step metrics of a group of runs: every epoch's rows -> thinned points, sent in batches.

The runs of a group log the same epochs, so which epochs are kept is decided once per epoch:
every `stride`-th, so that each metric has at most `max_points` points, the first epoch kept and
each run's last one added by `close`. history.csv has every row regardless. Rows become points
only when flushed (at least every FLUSH_SECONDS): `__call__` runs inside the training loop.
"""

from __future__ import annotations

import math
import time
from typing import Callable

FLUSH_SECONDS = 2.0  # metrics reach the store at least this often during a run
FLUSH_VALUES = 1000  # or once this many values of a run wait (MLflow's batch limit)

Points = dict[int, list[tuple[str, float, int]]]  # run key -> (metric, value, step)


class MetricStream:
    def __init__(self, send: Callable[[Points], None], keys: list[int], columns: list[str],
                 expected_rows: int, max_points: int, check: Callable[[], None] = lambda: None):
        """`send` takes the points of several runs at once; `keys` name the runs, in the order of
        the configurations; `columns` are the history's, "epoch" first. `check` is called when
        nothing waits to be sent: a recorder that died is noticed within FLUSH_SECONDS even
        while the thinning keeps no point for minutes."""
        self.send, self.keys, self.check = send, keys, check
        self.metrics = [c for c in columns if c != "epoch"]
        # Rows 0, stride, 2·stride, ... and the last: at most max_points of them.
        self.stride = max(1, math.ceil((expected_rows - 1) / (max_points - 1)))
        self.kept: list[tuple[int, list[int], list]] = []  # (epoch, configs, their rows)
        self.waiting = 0
        self.seen = 0
        self.last: dict[int, tuple[int, list]] = {}  # config -> its latest (epoch, row)
        self.queued_step: dict[int, int] = {}  # config -> its latest epoch among the points
        self.last_flush = time.monotonic()

    def __call__(self, epoch: int, configs: list[int], rows: list) -> None:
        """The rows (metric values in column order, without the epoch) of `configs` at `epoch`."""
        for c, row in zip(configs, rows):
            self.last[c] = (epoch, row)
        if self.seen % self.stride == 0:
            self.kept.append((epoch, configs, rows))
            self.queued_step.update(dict.fromkeys(configs, epoch))
            self.waiting += len(self.metrics)  # per run: each flush is one MLflow batch per run
        self.seen += 1
        # The clock is read every 64th epoch: an epoch can take a few microseconds.
        if self.waiting >= FLUSH_VALUES or (self.seen & 63 == 0 and time.monotonic() - self.last_flush > FLUSH_SECONDS):
            self.flush()

    def flush(self) -> None:
        points: Points = {}
        for epoch, configs, rows in self.kept:
            for c, row in zip(configs, rows):
                points.setdefault(self.keys[c], []).extend(zip(self.metrics, row, [epoch] * len(row)))
        self.send(points) if points else self.check()
        self.kept, self.waiting = [], 0
        self.last_flush = time.monotonic()

    def close(self) -> None:
        """Send what waits, and each run's last row if the thinning skipped it."""
        for c, (epoch, row) in self.last.items():
            if self.queued_step.get(c) != epoch:
                self.kept.append((epoch, [c], [row]))
                self.queued_step[c] = epoch
        self.flush()
