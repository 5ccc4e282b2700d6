"""The notebook API (gradlab.run, sweep, runs, history): the same record as the CLI's, repeated
calls in one process, mistakes as exceptions, an interrupted call, and the tutorial notebook."""

from __future__ import annotations

import csv
import math
import io
import json
import os
import signal
import threading
import time

import mlflow
import pytest

import gradlab
from conftest import ROOT, store_made
from conftest import gradlab as gradlab_cli
from gradlab.config import ConfigError
from gradlab.options import OverrideError
from gradlab.tracking import REGISTRY

SMALL = ("experiment=thermometer_sgd_split", "train.epochs=400")


def only(uri: str, experiment: str, **where):
    c = mlflow.MlflowClient(uri)
    found = c.search_runs([c.get_experiment_by_name(experiment).experiment_id])
    return [r for r in found if all(r.data.params.get(k) == v for k, v in where.items())]


def history_csv(run_id: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(mlflow.artifacts.load_text(f"runs:/{run_id}/history.csv"))))


def test_run_returns_what_the_cli_records_for_the_same_config(temp_store):
    r = gradlab.run(*SMALL, optimizer__lr=0.02)
    out = gradlab_cli(*SMALL, "optimizer.lr=0.02")
    assert out.returncode == 0, out.stderr
    runs = {x.info.run_id: x for x in only(temp_store, "thermometer_sgd_split")}
    assert set(runs) >= {r.run_id} and len(runs) == 2
    (cli_run,) = [x for x in runs.values() if x.info.run_id != r.run_id]
    assert r.outcome == cli_run.data.tags["gradlab.outcome"] == "completed"
    for key in ("final_train_loss", "final_val_loss", "best_val_loss", "epochs_run"):
        assert r.metrics[key] == cli_run.data.metrics[key], key
    mlflow.set_tracking_uri(temp_store)
    rows = history_csv(cli_run.info.run_id)
    assert len(r.history) == len(rows) == 400
    assert list(r.history.columns) == list(rows[0])
    for k in r.history.columns:  # history.csv holds repr()s: the same doubles, to the last bit
        assert [float(v) for v in r.history[k]] == [float(row[k]) for row in rows], k
    assert json.loads(mlflow.artifacts.load_text(f"runs:/{r.run_id}/params.json"))["params"] == r.params
    assert set(r.figures) == {"plots/loss_curves.png", "plots/fit.png", "plots/trajectory.png"}
    assert "<img src=\"data:image/png;base64," in r._repr_html_()


def test_repeated_calls_in_one_process_reuse_the_recorder(temp_store):
    a = gradlab.run(*SMALL)
    first = REGISTRY.first
    b = gradlab.run(*SMALL, optimizer__lr=0.005)
    s1 = gradlab.sweep({"optimizer.lr": [0.01, 0.02]}, *SMALL, "tracking.plots=none")
    s2 = gradlab.sweep(["optimizer.lr=0.01,0.02,0.03"], *SMALL, "tracking.plots=none")
    assert REGISTRY.first is first and first.alive()  # one recorder process for every call
    assert len({a.run_id, b.run_id}) == 2 and s1.parent_id != s2.parent_id
    assert (len(s1.runs), len(s2.runs)) == (2, 3)
    assert a.metrics["final_train_loss"] != b.metrics["final_train_loss"]


def test_a_sweep_returns_the_tidy_frame_of_its_children(temp_store):
    s = gradlab.sweep({"optimizer": ["gd", "adam"], "optimizer.lr": [1e-3, 1e-2]}, *SMALL, "tracking.plots=none")
    c = mlflow.MlflowClient(temp_store)
    kids = c.search_runs([c.get_experiment_by_name("thermometer_sgd_split").experiment_id],
                         filter_string=f"tags.mlflow.parentRunId = '{s.parent_id}'")
    assert sorted(s.runs["run_id"]) == sorted(k.info.run_id for k in kids) and len(kids) == 4
    by_id = s.runs.set_index("run_id")
    for k in kids:  # a recorded run's final loss (validation) and its place in the sweep's order
        assert by_id.loc[k.info.run_id, "final_loss"] == k.data.metrics["final_val_loss"]
        assert by_id.loc[k.info.run_id, "objective"] == pytest.approx(k.data.metrics.get("objective", math.nan), nan_ok=True)
    assert s.runs["rank"].tolist() == sorted(s.runs["rank"])  # in the ranking's order
    assert s.best["run_id"].iloc[0] == s.runs["run_id"].iloc[0]
    assert {"final_loss_vs_lr.png", "convergence_map.png"} <= set(s.figures())
    assert len(gradlab.runs(sweep=s.parent_id)) == 4 and len(gradlab.runs(experiment="thermometer_sgd_split")) == 4


@pytest.mark.slow
def test_two_joblib_sweeps_in_one_process_each_keep_their_children(temp_store):
    """joblib's loky kept its workers for the next call, with the first sweep's context in their
    environment: the second sweep's children nested under the first's parent, its own FAILED."""
    joblib = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "train.epochs=5", "tracking.plots=none"]
    first = gradlab.sweep({"optimizer.lr": [0.01, 0.02]}, *joblib, "tracking.experiment=first")
    second = gradlab.sweep({"optimizer.lr": [0.03, 0.04]}, *joblib, "tracking.experiment=second")
    c = mlflow.MlflowClient(temp_store)
    for s, lrs in ((first, {"0.01", "0.02"}), (second, {"0.03", "0.04"})):
        kids = c.search_runs([c.get_experiment_by_name(s.experiment).experiment_id],
                             filter_string=f"tags.mlflow.parentRunId = '{s.parent_id}'")
        assert {k.data.params["optimizer.lr"] for k in kids} == lrs and len(kids) == 2
        assert c.get_run(s.parent_id).info.status == "FINISHED"


def test_calls_from_two_threads_at_once_take_turns(temp_store):
    """The second thread's call raised Hydra's "GlobalHydra is already initialized"."""
    import threading

    results, errors = {}, []

    def call(lr):
        try:
            results[lr] = gradlab.run("train.epochs=20", f"optimizer.lr={lr}", "tracking.plots=none")
        except Exception as e:  # noqa: BLE001 - what the test reports
            errors.append(e)

    threads = [threading.Thread(target=call, args=(lr,)) for lr in (0.01, 0.02)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and set(results) == {0.01, 0.02}
    c = mlflow.MlflowClient(temp_store)
    for lr, r in results.items():
        stored = c.get_run(r.run_id)
        assert stored.info.status == "FINISHED" and float(stored.data.params["optimizer.lr"]) == lr


def test_history_is_the_whole_history_not_the_thinned_metrics(temp_store):
    r = gradlab.run(*SMALL[:1], "train.epochs=1000")
    h = gradlab.history(r.run_id)
    assert list(h["epoch"]) == list(range(1, 1001))
    points = mlflow.MlflowClient(temp_store).get_metric_history(r.run_id, "train_loss")
    assert len(points) < 1000  # the step metrics are thinned for the UI; the history is not


def test_mistakes_raise_typed_exceptions_with_the_clis_message(temp_store):
    with pytest.raises(OverrideError, match="lrr"):
        gradlab.run("optimizer.lrr=0.1")
    with pytest.raises(ConfigError, match=r"optimizer.lr=-1.0 is not allowed: must be a finite number > 0"):
        gradlab.run(optimizer__lr=-1)
    with pytest.raises(OverrideError, match=r"1 of 2 jobs have bad values; nothing was run:\n  \[optimizer.lr=-1\]"):
        gradlab.sweep({"optimizer.lr": [0.1, -1]})
    with pytest.raises(OverrideError, match=r"no sweep 'nosuch' in .*sweeps; the sweeps are .*lr_scale_optimizer"):
        gradlab.sweep("nosuch")
    assert isinstance(OverrideError("x"), ConfigError)
    r = gradlab.run(*SMALL)  # and the process goes on
    assert r.outcome == "completed"


SAME_MESSAGE = [  # what the CLI explains, the API raises in the same words
    ["optimizer.lrr=0.1"], ["model=himmelblau"], ["model.name=beale"], ["optimizer=adam", "optimizer.momentum=0.9"],
    ["+optimizer.foo=1"], ["train.epochs=ten"], ["optimizer.lr=abc"], ["data=csv"], ["optimizer.lr=[1,2]"],
    ["optimizer.lr=1", "optimizer.lr=0.1,0.2"],
]


@pytest.mark.parametrize("args", SAME_MESSAGE, ids=" ".join)
def test_a_mistake_raises_the_clis_own_line_as_a_typed_exception(cli, args):
    code, _, err = cli(*args, "train.epochs=2") if not any(a.startswith("train.epochs") for a in args) else cli(*args)
    assert code == 2 and err.startswith("gradlab: error: ") and err.count("\n") == 1, err
    line = err.removeprefix("gradlab: error: ").strip()
    with pytest.raises(ConfigError) as raised:
        gradlab.run(*args, **({} if any(a.startswith("train.epochs") for a in args) else {"train__epochs": 2}))
    assert str(raised.value) == line.replace("\\'", "'")  # Hydra quotes its example for a shell on the CLI only
    if args[0].startswith("model=") or args[0].startswith("model.name"):
        assert "the options are" in line and "linear" in line


@pytest.mark.parametrize("call,args,words", [
    ("run", (42,), ["gradlab.run: an override is a string KEY=VALUE, not int 42"]),
    ("run", (["optimizer=adam"],), ["not list"]),
    ("sweep", (123,), ["gradlab.sweep: the grid is a dict", "not int 123"]),
    ("sweep", (None,), ["not NoneType None"]),
    ("sweep", ({"optimizer.lr": [0.1]}, 5), ["gradlab.sweep: an override is a string KEY=VALUE, not int 5"]),
    ("sweep", ({"optimizer.lr": []},), ["the grid's 'optimizer.lr'", "at least one value"]),
])
def test_an_argument_of_the_wrong_type_is_a_typed_error_that_says_what_works(temp_store, call, args, words):
    from gradlab.options import ArgumentTypeError

    with pytest.raises(ArgumentTypeError) as raised:
        getattr(gradlab, call)(*args)
    assert isinstance(raised.value, TypeError) and isinstance(raised.value, ConfigError)
    for w in words:
        assert w in str(raised.value)
    assert "e.g. gradlab." in str(raised.value)


def test_model_name_naming_no_model_is_a_config_error(temp_store):
    with pytest.raises(ConfigError, match=r"model.name='beale' is not allowed: no such model; the options are bowl, "):
        gradlab.run(model__name="beale")


def interrupt_once_training(temp_store):
    """SIGINT to this process once a run of thermometer_sgd_split has logged its first points."""
    def watch():
        end = time.monotonic() + 60
        while time.monotonic() < end and not store_made(temp_store):  # a client must not race its creation
            time.sleep(0.1)
        c = mlflow.MlflowClient(temp_store)
        while time.monotonic() < end:
            try:
                exp = c.get_experiment_by_name("thermometer_sgd_split")
                found = c.search_runs([exp.experiment_id]) if exp else []
                if found and c.get_metric_history(found[0].info.run_id, "train_loss"):
                    break
            except Exception:  # noqa: BLE001 - the store is still being made
                pass
            time.sleep(0.2)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=watch, daemon=True).start()


def test_an_interrupted_call_leaves_its_run_killed_and_the_process_usable(temp_store):
    interrupt_once_training(temp_store)
    with pytest.raises(KeyboardInterrupt):
        gradlab.run(*SMALL[:1], "train.epochs=100000000")
    (killed,) = only(temp_store, "thermometer_sgd_split")
    assert (killed.info.status, killed.data.tags["gradlab.outcome"]) == ("KILLED", "killed")
    mlflow.set_tracking_uri(temp_store)
    assert len(history_csv(killed.info.run_id)) == int(killed.data.metrics["epochs_run"]) > 0
    assert gradlab.run(*SMALL).outcome == "completed"  # the kernel goes on


def test_an_interrupted_sweep_leaves_its_parent_and_children_killed(temp_store):
    interrupt_once_training(temp_store)
    with pytest.raises(KeyboardInterrupt):
        gradlab.sweep({"optimizer.lr": [0.01, 0.02]}, SMALL[0], "train.epochs=100000000", "tracking.plots=none")
    found = only(temp_store, "thermometer_sgd_split")
    assert len(found) == 3 and {(r.info.status, r.data.tags["gradlab.outcome"]) for r in found} == {("KILLED", "killed")}
    assert len(gradlab.sweep({"optimizer.lr": [0.01]}, *SMALL).runs) == 1  # and the next sweep runs


@pytest.mark.slow
def test_the_tutorial_notebook_runs_and_is_stored_without_outputs(temp_store, tmp_path):
    import nbclient
    import nbformat

    path = ROOT / "docs" / "tutorial.ipynb"
    nb = nbformat.read(path, as_version=4)
    assert all(not c.get("outputs") and not c.get("execution_count") for c in nb.cells if c.cell_type == "code")
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors, errors
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})]
    assert len(images) == 1  # the figure asked for, not every figure the report drew
    c = mlflow.MlflowClient(temp_store)
    outcomes = {e.name: {r.data.tags["gradlab.outcome"] for r in c.search_runs([e.experiment_id])}
                for e in c.search_experiments() if e.name != "Default"}
    assert outcomes["thermometer_handgrad_raw"] == {"diverged"}
    assert outcomes["thermometer_handgrad_scaled"] <= {"completed", "reached_stop_loss"}
    assert "diverged" in outcomes["default"] and "completed" in outcomes["default"]  # the sweep: both fates
