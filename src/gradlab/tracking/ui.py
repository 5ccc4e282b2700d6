"""The MLflow UI on a store: where to point a browser, and serving it.

A fresh browser profile opens an experiment on MLflow's GenAI overview (its workflow type lives
in the browser's localStorage and defaults to "genai"; the experiments' `mlflow.experimentKind`
tag does not change that). The `workflowType` query parameter overrides it, and the `/runs` tab
route opens the runs table directly: the URLs below carry both.
"""

from __future__ import annotations

import os
import sys

from gradlab.tracking import query
from gradlab.tracking.store import Store

HOST = "127.0.0.1"  # the UI has no authentication: loopback only


def runs_url(base: str, experiment_id: str) -> str:
    """An experiment's runs table, as a training (not GenAI) experiment."""
    return f"{base}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def run_url(base: str, experiment_id: str, run_id: str) -> str:
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}?workflowType=machine_learning"


def where_to_look(store: Store, base: str) -> list[str]:
    """Lines naming the UI's address and the runs view of the latest sweep (if any)."""
    lines = [f"gradlab: the MLflow UI on {store.uri}: {base}/#/experiments?workflowType=machine_learning"]
    sweep = query.latest_sweep(store)
    if sweep is not None:
        lines.append(f"  latest sweep, {sweep.name!r}: {runs_url(base, sweep.experiment_id)}")
        lines.append(f"  its ranking: {run_url(base, sweep.experiment_id, sweep.id)}")
    return lines


def serve(store: Store, port: int) -> None:
    """Print where to look, then become `mlflow ui` on the store (never returns)."""
    base = f"http://{HOST}:{port}"
    for line in where_to_look(store, base):
        print(line, flush=True)
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    os.execve(sys.executable, [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", store.uri, "--host", HOST,
                               "--port", str(port)], env)
