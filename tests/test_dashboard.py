"""The dashboard in a real browser (slow tier): a small sweep into a temporary store, `make ui`
on a free loopback port, headless Chromium with a fresh profile (docs/dashboard.py's steps, the
same that take the README's screenshots). What the browser shows is checked against the store
and the runs' own params.json, and the names and ranking against what the test derives itself."""

from __future__ import annotations

import json
import math
import os
import shutil
import sys

import mlflow
import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "docs"))
import dashboard  # noqa: E402

pytestmark = pytest.mark.slow
SCALE = {"none": "raw", "factor": "×0.1", "standardize": "standardize"}


@pytest.fixture(scope="module")
def seen(tmp_path_factory):
    if not (shutil.which("chromium") or shutil.which("chromium-browser") or os.environ.get("GRADLAB_CHROMIUM")):
        message = "no Chromium for the dashboard test: apt-get install chromium (.ci/run does)"
        pytest.fail(message) if os.environ.get("CI") else pytest.skip(message)
    tmp = tmp_path_factory.mktemp("dashboard")
    store = f"sqlite:///{tmp}/mlflow.db"
    dashboard.sweep(store, tmp, "optimizer=gd,adam", "optimizer.lr=1e-2,1", "train.epochs=300")
    with dashboard.served(store, dashboard.free_port()) as urls:
        observed = dashboard.look(urls, tmp)
    client = mlflow.MlflowClient(store)
    exp = client.get_experiment_by_name("lr_scale_optimizer")
    runs = {r.info.run_id: r for r in client.search_runs([exp.experiment_id])}
    return observed, runs, client, tmp


def test_the_experiment_opens_on_its_runs_table(seen):
    observed, *_ = seen
    assert observed["runs_table"] and not observed["genai_overview"]


def test_the_parent_holds_its_children_nested_each_named_by_its_swept_values(seen):
    observed, runs, _, _ = seen
    (parent_name,) = observed["collapsed"]  # before expanding: only the parent
    rows = observed["rows"]
    assert rows[0][0] == parent_name and runs[rows[0][1]].data.tags["gradlab.role"] == "sweep"
    children = rows[1:]
    assert len(children) == 12 and {runs[i].data.tags["mlflow.parentRunId"] for _, i in children} == {rows[0][1]}
    names = [name for name, _ in children]
    assert len(set(names)) == len(names)
    for name, run_id in children:
        p = runs[run_id].data.params
        expected = f"{p['optimizer.name']} lr={float(p['optimizer.lr']):g} {SCALE[p['data.scaling']]}"
        assert name.split(" · ")[0] == expected


def test_the_final_parameter_columns_are_the_final_parameters(seen):
    observed, runs, client, tmp = seen
    shown = observed["child_metrics"]
    final = json.loads(mlflow.artifacts.download_artifacts(run_id=observed["child"], artifact_path="params.json",
                                                           dst_path=str(tmp), tracking_uri=client.tracking_uri)
                       and (tmp / "params.json").read_text())["params"]
    for name in ("w", "b"):
        value = final[name][0] if isinstance(final[name], list) else final[name]
        assert float(shown[f"param.{name}"]) == pytest.approx(value, rel=1e-6)


def test_a_childs_plot_renders_in_the_artifact_viewer(seen):
    observed, *_ = seen
    width, height = observed["plot_size"]
    assert width >= 400 and height >= 250


def test_the_parents_page_shows_the_ranking(seen):
    observed, runs, _, _ = seen
    text = observed["parent_text"]
    assert "varied optimizer, optimizer.lr, data.scaling" in text.replace("`", "")
    children = [r for r in runs.values() if r.data.tags.get("gradlab.role") != "sweep"]
    results = [r for r in children if r.data.tags["gradlab.outcome"] == "completed"]
    # The test's own order: at the optimum first, then the final validation loss
    best = min(results, key=lambda r: (r.data.metrics["excess_loss"] > 1e-3 * r.data.metrics["optimal_train_loss"] + 1e-9,
                                       r.data.metrics["final_val_loss"]))
    table = text.split("best first:", 1)[1]  # the ranked table, as the page renders it
    first_row = table.split("excess loss", 1)[1].strip().split("\n2", 1)[0]
    assert first_row.split(None, 1)[0] == "1" and best.info.run_name.split(" · ")[0] in first_row
    assert math.isfinite(best.data.metrics["final_val_loss"])
