"""The trials of a search that is running in this process, found by their jobs' overrides.

A launcher that trains in this process (batched, basic) claims each job's trial from its sweep:
its tags go on the job's run, and its watch sees the run's curve (the pruner's say). Jobs in other
processes (joblib, Slurm) find nothing and train to the end. Nothing here imports Optuna.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable


@dataclass
class Claim:
    tags: dict[str, str]
    watch: Callable[[int, float], bool]  # (epoch, objective) -> stop this run now (pruned)


@dataclass
class Trials:
    offered: dict[tuple[str, ...], list[Claim]] = field(default_factory=dict)

    def offer(self, overrides, claim: Claim) -> None:
        """A trial's job is about to be launched with these overrides."""
        self.offered.setdefault(tuple(overrides), []).append(claim)

    def claim(self, overrides) -> Claim | None:
        """The trial behind a job with these overrides, once (two trials may draw the same values)."""
        waiting = self.offered.get(tuple(overrides))
        if not waiting:
            return None
        found = waiting.pop(0)
        if not waiting:
            del self.offered[tuple(overrides)]
        return found

    def withdraw(self) -> None:
        """Forget every trial still offered (its launch is over, whatever happened)."""
        self.offered.clear()
