"""Multirun support: the parent MLflow run of a sweep (filled in by the sweep callback)."""

from __future__ import annotations

import os

PARENT_ENV = "GRADLAB_PARENT_RUN_ID"
SWEEP_ENV = "GRADLAB_SWEEP"


def parent_run_id() -> str | None:
    return os.environ.get(PARENT_ENV) or None


def sweep_name() -> str | None:
    return os.environ.get(SWEEP_ENV) or None


def abort(signum: int) -> None:
    """Close this process's sweep parent run (if any) after a signal."""
