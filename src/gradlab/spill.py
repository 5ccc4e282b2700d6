"""A history's older rows on disk, so that a run of millions of epochs holds a bounded amount of
memory: one file per column (int64 epochs, float64 values) in a temporary folder. No torch here:
the recorder process reads these files to write history.csv."""

from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from array import array
from pathlib import Path

import numpy as np

SPILL_ROWS = 65_536  # rows a history keeps in memory; older ones wait in files on disk


class Spill:
    """A history's older rows on disk: one file per column (int64 epochs, float64 values), in a
    temporary folder removed with the history."""

    def __init__(self, n_columns: int):
        self.folder = Path(tempfile.mkdtemp(prefix="gradlab-history-"))
        self.paths = [self.folder / f"{i}.bin" for i in range(n_columns)]
        self.rows = 0
        self.remove = weakref.finalize(self, _remove, self.folder, os.getpid())
        _made.add(self)

    def write(self, columns: list[array]) -> None:
        for path, values in zip(self.paths, columns):
            with path.open("ab") as f:
                values.tofile(f)
        self.rows += len(columns[0])

    def read(self, i: int):
        """Column i in parts of SPILL_ROWS rows (the size it was written in: columns stay aligned)."""
        yield from _parts(self.paths[i], i, self.rows)

    def at(self, i: int, rows: np.ndarray) -> np.ndarray:
        values = np.memmap(self.paths[i], dtype=np.int64 if i == 0 else np.float64, mode="r", shape=(self.rows,))
        return np.asarray(values[rows], dtype=np.float64)

    def handed_over(self) -> dict:
        """Hard links to the files (no copy), in a folder of their own: the history keeps its
        files, and whoever writes history.csv deletes these."""
        folder = Path(tempfile.mkdtemp(prefix="gradlab-history-out-"))
        for path in self.paths:
            try:
                os.link(path, folder / path.name)
            except OSError:  # a file system without hard links
                shutil.copyfile(path, folder / path.name)
        return {"folder": str(folder), "rows": self.rows}


def read_spilled(spilled: dict, n_columns: int):
    """The rows a history spilled, as (epochs, *values) parts, for whoever writes them out; the
    handed-over folder is deleted once read."""
    folder, rows = Path(spilled["folder"]), spilled["rows"]
    try:
        yield from zip(*(_parts(folder / f"{i}.bin", i, rows) for i in range(n_columns)))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _parts(path: Path, i: int, rows: int):
    """A column file's values in parts of SPILL_ROWS (column 0 holds the int64 epochs)."""
    with path.open("rb") as f:
        for start in range(0, rows, SPILL_ROWS):
            part = array("q" if i == 0 else "d")
            part.fromfile(f, min(SPILL_ROWS, rows - start))
            yield part


_made: "weakref.WeakSet[Spill]" = weakref.WeakSet()  # this process's spills still alive


def remove_all() -> None:
    """Remove every spill folder of this process now: one about to leave by os._exit (an
    orphaned sweep worker) runs no finalizer. What was handed over is the reader's (hard links)."""
    for s in list(_made):
        s.remove()


def _remove(folder: Path, owner: int) -> None:
    """Remove a spill folder, in the process that made it only (a forked child must not)."""
    if os.getpid() == owner:
        shutil.rmtree(folder, ignore_errors=True)
