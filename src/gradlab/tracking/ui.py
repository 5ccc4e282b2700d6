"""The MLflow UI on a store: where to point a browser, and serving it.

A fresh browser profile opens an experiment on MLflow's GenAI overview (its workflow type lives
in the browser's localStorage and defaults to "genai"; the experiments' `mlflow.experimentKind`
tag does not change that). The `workflowType` query parameter overrides it, and the `/runs` tab
route opens the runs table directly: the URLs below carry both.
"""

from __future__ import annotations

import json
import os
import sys

from gradlab.tracking import query
from gradlab.tracking.store import Store, masked

HOST = "127.0.0.1"  # the UI has no authentication: loopback only


def runs_url(base: str, experiment_id: str) -> str:
    """An experiment's runs table, as a training (not GenAI) experiment."""
    return f"{base}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def run_url(base: str, experiment_id: str, run_id: str) -> str:
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}?workflowType=machine_learning"


# MLflow's UI opens the runs table in a view shared through this experiment tag (the "Share"
# button writes one): its columns, its order, which parents are expanded.
SHARED_VIEW = "mlflow.sharedViewState."
NAME_COLUMN = "attributes.`Run Name`"
ANSWER = ["params.`verdict`", "metrics.`epochs_to_optimum`", "metrics.`excess_loss`", "metrics.`objective`"]


def share_sweep_view(store: Store, sweep: query.RunRecord) -> str:
    """A view of the runs table for a sweep: its swept values, the verdict, the epochs to the
    optimum, the excess and the objective as columns, best first (by `objective`), the sweep
    expanded. Written as an experiment tag; returns its key for the URL."""
    params = [k if "." in k else k + ".name" for k in sweep.tag("varied").split(",") if k]
    section = "gradlab-answer"
    charts = [  # the chart view opens on the answer: verdict over the swept values, excess against lr (log10)
        {"type": "PARALLEL", "uuid": "gradlab-parallel", "metricSectionId": section, "deleted": False, "isGenerated": False,
         "selectedParams": params, "selectedMetrics": ["verdict_code", "log10_excess_loss"]},
        {"type": "SCATTER", "uuid": "gradlab-scatter", "metricSectionId": section, "deleted": False, "isGenerated": False,
         "xaxis": {"key": "log10_lr", "type": "METRIC"}, "yaxis": {"key": "log10_excess_loss", "type": "METRIC"},
         "runsCountToCompare": 100}]
    state = {"searchFilter": "", "orderByKey": "metrics.`objective`", "orderByAsc": True,
             "compareRunCharts": charts,
             "compareRunSections": [{"display": True, "name": "The sweep's answer", "uuid": section, "isReordered": False}],
             "selectedColumns": [*dict.fromkeys([f"params.`{k}`" for k in params] + ANSWER)], "runsExpanded": {sweep.id: True},
             # the table cuts names at ~15 characters, a child's lead is longer (a width applies to a column in the order)
             "columnOrder": [NAME_COLUMN], "columnWidths": {NAME_COLUMN: 270}, "runsHiddenMode": "SHOW_ALL"}
    key = f"gradlab-{sweep.id}"
    store.set_experiment_tag(sweep.experiment_id, SHARED_VIEW + key, json.dumps(state))
    return key


def sweep_url(base: str, experiment_id: str, key: str) -> str:
    """The runs table in a shared view."""
    return f"{base}/#/experiments/{experiment_id}/runs?viewStateShareKey={key}&workflowType=machine_learning"


def where_to_look(store: Store, base: str) -> list[str]:
    """Lines naming the UI's address and the runs view of the latest sweep (if any)."""
    lines = [f"gradlab: the MLflow UI on {masked(store.uri)}: {base}/#/experiments?workflowType=machine_learning"]
    sweep = query.latest_sweep(store)
    if sweep is not None:
        key = share_sweep_view(store, sweep)
        lines.append(f"  latest sweep, {sweep.name!r}, its runs best first: {sweep_url(base, sweep.experiment_id, key)}")
        lines.append(f"  its answer (the ranking and the convergence map): {run_url(base, sweep.experiment_id, sweep.id)}")
    return lines


def serve(store: Store, port: int) -> None:
    """Print where to look, then become `mlflow ui` on the store (never returns)."""
    base = f"http://{HOST}:{port}"
    for line in where_to_look(store, base):
        print(line, flush=True)
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    os.execve(sys.executable, [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", store.uri, "--host", HOST,
                               "--port", str(port)], env)
