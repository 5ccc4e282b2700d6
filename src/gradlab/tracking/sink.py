"""Where a group of runs is recorded: one recorder process (Recorder) or several sharing the
work (Recorders) offer the same calls. Keys name runs from their start on; the ends arrive in
order; a sink whose process died raises RecorderGone and the caller writes what it held
(gradlab.tracking.ends)."""

from __future__ import annotations

from typing import Protocol

from gradlab.tracking.spec import RunEnd, RunSpec
from gradlab.tracking.stream import Points


class RunSink(Protocol):
    uri: str | None

    def open(self, uri: str | None = None) -> str: ...  # the store, checked here, opened there
    def start(self, specs: list[RunSpec]) -> list[int]: ...  # runs to make; their keys
    def log(self, points: Points) -> None: ...
    def finish(self, keys: list[int], ends: list[RunEnd]) -> None: ...
    def sync(self) -> None: ...  # every request so far done; raises what failed
    def flush(self) -> None: ...  # every request so far in the recorders' hands (read, maybe not done)
    def poll(self) -> None: ...  # raises now if the store itself failed (never blocks)
    def ask(self, query: str, *args): ...
    def run_id(self, key: int) -> str: ...
    def finish_here(self, keys: list[int], ends: list[RunEnd]) -> None: ...  # written by the caller's process
    def alive(self) -> bool: ...
