"""A status line on a terminal every second or so; silent otherwise (a log file, a pipe)."""

from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, total: int, metrics: list[str], enabled: bool | None, unit: str = "epoch"):
        """`metrics` name the values of each row (the history's columns but the epoch)."""
        self.total, self.unit = total, unit
        self.losses = [(i, m) for i, m in enumerate(metrics) if m.endswith("loss")]
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.next = time.monotonic() + 1.0
        self.shown = False

    def __call__(self, epoch: int, configs: list[int], rows: list) -> None:
        if self.enabled and time.monotonic() >= self.next:
            self.next = time.monotonic() + 1.0
            if len(configs) == 1:
                detail = "  ".join(f"{m} {rows[0][i]:.4g}" for i, m in self.losses)
            else:
                detail = f"{len(configs)} configurations training"
            self.show(f"{self.unit} {epoch}/{self.total} ({100 * epoch / self.total:.0f}%)  {detail}")

    def show(self, text: str) -> None:
        self._write(f"\r  {text}   ")
        self.shown = True

    def close(self) -> None:
        if self.shown:
            self._write("\n")
            self.shown = False

    def _write(self, text: str) -> None:
        """A closed terminal (SIGHUP) fails every write with EIO: the line stops, the run's end is still recorded."""
        try:
            print(text, end="", file=sys.stderr, flush=True)
        except OSError:
            self.enabled = False
