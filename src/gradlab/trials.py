"""The trials of a search that is running in this process, found by their jobs' overrides.

A launcher that trains in this process (batched, basic) claims each job's trial here: its tags go
on the job's run, and its watch sees the run's curve (the pruner's say). Jobs in other processes
(joblib, Slurm) find nothing and train to the end. Nothing here imports Optuna.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass
class Claim:
    tags: dict[str, str]
    watch: Callable[[int, float], bool]  # (epoch, objective) -> stop this run now (pruned)


_offered: dict[tuple[str, ...], list[Claim]] = {}


def offer(overrides, claim: Claim) -> None:
    """A trial's job is about to be launched with these overrides."""
    _offered.setdefault(tuple(overrides), []).append(claim)


def claim(overrides) -> Claim | None:
    """The trial behind a job with these overrides, once (two trials may draw the same values)."""
    waiting = _offered.get(tuple(overrides))
    if not waiting:
        return None
    found = waiting.pop(0)
    if not waiting:
        del _offered[tuple(overrides)]
    return found


def withdraw() -> None:
    """Forget every trial still offered (its launch is over, whatever happened)."""
    _offered.clear()
