"""The dashboard in a real browser (slow tier): a small sweep into a temporary store, `make ui`
on a free loopback port, headless Chromium with a fresh profile (docs/dashboard.py's steps, the
same that take the README's screenshots). What the browser shows is checked against the store
and the runs' own params.json, and the names and ranking against what the test derives itself."""

from __future__ import annotations

import json
import os
import shutil
import sys

import mlflow
import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "docs"))
import dashboard  # noqa: E402

# One worker runs the module: its fixture is one sweep in the browser, made once (make test runs -n).
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("dashboard")]
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


def by_hand(run) -> tuple:
    """The test's own order: at the optimum (excess within 1e-3 of the optimum) first, the fewest
    epochs to it first (the first epoch of its history from which the loss stays within), then
    the excess; diverged runs last."""
    m = run.data.metrics
    if run.data.tags["gradlab.outcome"] == "diverged":
        return (2, 0.0)
    level = m["optimal_train_loss"] * (1 + 1e-3) + 1e-9
    if m["final_train_loss"] > level:
        return (1, m["excess_loss"])
    rows = mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/history.csv").splitlines()
    column = rows[0].split(",").index("train_loss")
    above = [k for k, row in enumerate(rows[1:]) if float(row.split(",")[column]) > level]
    return (0, (above[-1] + 1) if above else 0)


def test_the_runs_view_opens_on_the_answer_best_first_each_child_named_by_its_swept_values(seen):
    observed, runs, client, _ = seen
    for column in ("optimizer.name", "optimizer.lr", "data.scaling", "verdict", "epochs_to_optimum", "objective"):
        assert column in observed["columns"], observed["columns"]
    rows = observed["rows"]
    children = [(name, i) for name, i in rows if runs[i].data.tags.get("gradlab.role") != "sweep"]
    assert len(children) == 12 and len(rows) == 13  # every child, and the parent
    mlflow.set_tracking_uri(client.tracking_uri)
    ranked = sorted((runs[i] for _, i in children), key=by_hand)
    shown = [runs[i] for _, i in children]
    assert [by_hand(r) for r in shown] == [by_hand(r) for r in ranked]  # best first (ties may swap)
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


def test_the_parents_page_shows_the_map_and_the_ranking(seen):
    observed, runs, client, _ = seen
    text = observed["parent_text"]
    assert "varied optimizer, optimizer.lr, data.scaling" in text.replace("`", "")
    maps = [w for src, w in observed["parent_images"] if "convergence_map.png" in src]
    assert maps and maps[0] > 400  # the map, drawn at the sweep's end, shown in the description
    children = [r for r in runs.values() if r.data.tags.get("gradlab.role") != "sweep"]
    mlflow.set_tracking_uri(client.tracking_uri)
    best = min(children, key=by_hand)
    assert by_hand(best)[0] == 0  # at the optimum
    table = text.split("best first:", 1)[1]  # the ranked table, as the page renders it
    first_row = table.split("excess loss", 1)[1].strip().split("\n2", 1)[0]
    assert first_row.split(None, 1)[0] == "1" and best.info.run_name.split(" · ")[0] in first_row
    # the whole ranking, diverged runs included, in the artifact viewer
    rows = observed["ranking_rows"][1:]
    assert len(rows) == 12 and sum("diverged" in r for r in rows) == sum(
        r.data.tags["gradlab.outcome"] == "diverged" for r in children) > 0
