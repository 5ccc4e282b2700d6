"""Sweeps in MLflow (parent and children, failures, resume, parallel jobs, launchers) and the
comparison report. In-process multiruns use Hydra's basic launcher, which runs jobs in this
process; real subprocess multiruns of every sweep file are in the slow tier."""

from __future__ import annotations

import contextlib
import math
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from conftest import ROOT, Started, compose, gradlab, history, store_made, wait_for
from gradlab import compare, convergence, optim, tracking
from gradlab.tracking import processes

SWEEPS = sorted(p.stem for p in (ROOT / "sweeps").glob("*.yaml"))
FAST = {"optuna_lr_momentum": ["hydra.sweeper.n_trials=3"], "optuna_pruned_mlp": ["hydra.sweeper.n_trials=3"]}
JOBS = {"lr_scale_optimizer": 60, "dense_grid": 240, "gradient_methods": 16, "batch_size": 9, "seeds": 8, "optuna_lr_momentum": 3,
        "optuna_pruned_mlp": 3, "bench_grid": 12, "schedules": 64,  # 4 optimizers × 5 rates × 3 scalings; 4 methods × 4 recipes; 3 × 3; 8; 3 trials; 2 × 3 × 2
        "test_functions": 252}  # 6 functions × 14 optimizers × 3 rates
# schedules: 2 problems × 4 schedules × 2 optimizers × 4 rates
EPOCHS = {"schedules": 101}  # its warm-up takes 100 epochs: fewer are refused


def store_runs(uri: str, experiment: str):
    c = mlflow.MlflowClient(uri)
    exp = c.get_experiment_by_name(experiment)
    runs = c.search_runs([exp.experiment_id], max_results=1000) if exp else []
    parents = [r for r in runs if r.data.tags.get("gradlab.role") == "sweep"]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return parents, children


# ------------------------------------------------------------------------ sweep files
@pytest.mark.parametrize("name", SWEEPS)
def test_every_sweep_file_composes(cli, name):
    code, out, err = cli("-cd", str(ROOT / "sweeps"), "-cn", name, "--cfg", "job")
    assert code == 0, err
    assert f"experiment: {name}" in out


def test_the_design_sweeps_exist():
    assert {"lr_scale_optimizer", "gradient_methods", "batch_size", "seeds"} <= set(SWEEPS)
    assert any("optuna" in (ROOT / "sweeps" / f"{s}.yaml").read_text() for s in SWEEPS)


def test_headline_sweep_covers_the_promised_grid():
    text = (ROOT / "sweeps" / "lr_scale_optimizer.yaml").read_text()
    assert "optimizer: gd,sgd_momentum,adam,rmsprop" in text
    assert "data.scaling: none,factor,standardize" in text
    assert "optimizer.lr: 1e-4,1e-3,1e-2,1e-1,1" in text  # five decades; raw inputs diverge from 1e-3


@pytest.mark.slow
@pytest.mark.parametrize("name", SWEEPS)
def test_every_sweep_file_runs_as_a_real_multirun(temp_store, tmp_path, name):
    out = gradlab("-cd", "sweeps", "-cn", name, f"train.epochs={EPOCHS.get(name, 3)}", "tracking.plots=none", *FAST.get(name, []),
                  f"hydra.sweep.dir={tmp_path}/multirun", timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    parents, children = store_runs(temp_store, name)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert children and all(c.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for c in children)
    assert all(c.info.status in ("FINISHED", "FAILED") for c in children)
    assert int(parents[0].data.tags["gradlab.jobs"]) == len(children) == JOBS[name]
    assert not parents[0].data.metrics  # bookkeeping is tags: no parent-only charts among the children's
    names = [c.info.run_name for c in children]
    assert len(set(names)) == len(names), "two children of one sweep share a name"


# ------------------------------------------------------------------- parent and children
def test_multirun_is_one_parent_with_a_child_per_job(cli, temp_store):
    code, out, err = cli("-m", "optimizer=gd,adam", "optimizer.lr=0.001,0.01", "train.epochs=30", "tracking.plots=none")
    assert code == 0, err
    parents, children = store_runs(temp_store, "default")
    (parent,) = parents
    assert re.fullmatch(r"multirun \d\d-\d\d \d\d:\d\d:\d\d", parent.info.run_name) and parent.info.status == "FINISHED"
    assert len(children) == 4
    assert {c.data.tags["gradlab.overrides"] for c in children} == {
        f"optimizer={o} optimizer.lr={lr} train.epochs=30 tracking.plots=none" for o in ("gd", "adam") for lr in ("0.001", "0.01")}
    assert all(c.data.tags["mlflow.parentRunId"] == parent.info.run_id for c in children)
    assert all(c.data.tags["gradlab.sweep"] == "multirun" for c in children)
    # every child carries the params and final metrics that make the UI's comparison work
    for c in children:
        assert {"optimizer.lr", "optimizer.name", "data.scaling"} <= set(c.data.params)
        assert {"final_train_loss", "final_val_loss", "epochs_run"} <= set(c.data.metrics)
    assert "sweep.yaml" in {a.path for a in mlflow.MlflowClient(temp_store).list_artifacts(parent.info.run_id)}
    # best: at the optimum first (excess within 1e-3 of the optimum), the fewest epochs there (the
    # first epoch of its history from which the loss stays within), then by the excess
    def by_hand(c):
        m = c.data.metrics
        level = m["optimal_train_loss"] * (1 + 1e-3) + 1e-9
        if m["excess_loss"] > level - m["optimal_train_loss"]:
            return (1, m["excess_loss"])
        losses = [float(r["train_loss"]) for r in history(temp_store, c.info.run_id)]
        above = [k for k, v in enumerate(losses) if v > level]
        return (0, (above[-1] + 1) if above else 0)
    best = min(children, key=by_hand)
    assert parent.data.tags["gradlab.best_run"] == best.info.run_id
    assert float(parent.data.tags["gradlab.best_objective"]) == best.data.metrics["objective"]
    # each child's name leads with the values the sweep varies, and nothing else
    for c in children:
        o = c.data.params["optimizer.name"]
        assert c.info.run_name.startswith(f"{o} lr={float(c.data.params['optimizer.lr']):g} · "), c.info.run_name
    # the parent's page (its description) ranks the children
    note = parent.data.tags["mlflow.note.content"]
    assert "varied `optimizer`, `optimizer.lr`" in note
    ranked = [line.split(" | ")[1] for line in note.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert ranked == [c.info.run_name.split(" · ")[0] for c in sorted(children, key=by_hand)]


def test_named_sweep_lands_in_its_own_experiment(cli, temp_store):
    code, _, err = cli("-cd", str(ROOT / "sweeps"), "-cn", "seeds", "train.seed=0,1", "train.epochs=5", "tracking.plots=none")
    assert code == 0, err
    parents, children = store_runs(temp_store, "seeds")
    assert len(parents) == 1 and parents[0].info.run_name.startswith("seeds ") and len(children) == 2
    assert parents[0].data.tags["gradlab.sweep"] == "seeds"
    assert sorted(c.info.run_name.split(" · ")[0] for c in children) == ["seed=0", "seed=1"]


def test_a_bad_value_anywhere_in_the_grid_stops_the_sweep_before_any_job(cli, temp_store, runs):
    code, _, err = cli("-m", "optimizer.lr=0.01,-1", "data.val_fraction=0.2,1.5", "train.epochs=5")
    assert code == 2
    assert "3 of 4 jobs have bad values; nothing was run" in err
    assert "[optimizer.lr=-1 data.val_fraction=0.2 train.epochs=5]: optimizer.lr=-1.0 is not allowed" in err
    assert "data.val_fraction=1.5 is not allowed" in err
    assert runs() == []


class Crashes:
    """An optimizer that fails at its 5th step: a job that crashes mid-training."""

    needs_closure = False

    def __init__(self, inner, message):
        self.inner, self.steps, self.message = inner, 0, message

    def step(self, grads):
        self.steps += 1
        if self.steps == 5:
            raise RuntimeError(self.message)
        self.inner.step(grads)


def crash_at(monkeypatch, lr: float, message: str) -> None:
    real = optim.build
    monkeypatch.setattr(optim, "build", lambda cfgs, p: Crashes(real(cfgs, p), message) if cfgs[0].lr == lr else real(cfgs, p))


def test_crashing_and_diverging_jobs(cli, temp_store, monkeypatch):
    crash_at(monkeypatch, 0.02, "optimizer state corrupted")
    code, out, err = cli("-m", "optimizer.lr=0.01,0.02,1.0", "train.epochs=200", "tracking.plots=none")
    assert code == 1  # a crash makes the sweep fail, after every other job ran
    parents, children = store_runs(temp_store, "default")
    by_lr = {c.data.params["optimizer.lr"]: c for c in children}
    assert by_lr["0.01"].info.status == "FINISHED"
    crashed, diverged = by_lr["0.02"], by_lr["1.0"]
    assert crashed.info.status == "FAILED" and crashed.data.tags["gradlab.outcome"] == "failed"
    assert crashed.data.tags["gradlab.error.message"] == "optimizer state corrupted"
    assert diverged.info.status == "FAILED" and diverged.data.tags["gradlab.outcome"] == "diverged"
    assert parents[0].info.status == "FAILED" and parents[0].data.tags["gradlab.jobs_failed"] == "1"
    assert parents[0].data.tags["gradlab.jobs_diverged"] == "1"
    assert "FAILED [optimizer.lr=0.02 train.epochs=200 tracking.plots=none]: RuntimeError optimizer state corrupted" in out


def test_diverged_jobs_alone_do_not_fail_the_sweep(cli, temp_store):
    code, out, _ = cli("-m", "optimizer.lr=0.01,1.0", "train.epochs=200", "tracking.plots=none")
    assert code == 0
    assert "2 jobs: 1 finished, 1 diverged, 0 failed" in out


def test_resume_skips_finished_jobs_into_the_same_parent(cli, temp_store, monkeypatch):
    real = optim.build
    crash_at(monkeypatch, 0.02, "interrupted")
    args = ["-m", "optimizer.lr=0.01,0.02,0.03", "train.epochs=20", "tracking.plots=none"]
    assert cli(*args)[0] == 1
    monkeypatch.setattr(optim, "build", real)
    code, out, err = cli(*args, "tracking.skip_finished=true")
    assert code == 0, err
    assert out.count("already completed with this config") == 2
    parents, children = store_runs(temp_store, "default")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"  # the same parent, reopened
    assert sorted((c.data.params["optimizer.lr"], c.info.status) for c in children) == [
        ("0.01", "FINISHED"), ("0.02", "FAILED"), ("0.02", "FINISHED"), ("0.03", "FINISHED")]
    # and the report keeps the latest try of each config
    folder = compare.report(tracking.Store(), experiment="default", out=None)
    ranking = pd.read_csv(folder / "summary.csv")
    assert sorted(ranking["lr"]) == [0.01, 0.02, 0.03] and set(ranking["outcome"]) == {"completed"}


@pytest.mark.slow
def test_parallel_jobs_lose_nothing_and_match_sequential(temp_store, tmp_path):
    grid = ["-m", "optimizer=sgd,adam,rmsprop", "optimizer.lr=0.001,0.01", "train.epochs=300", "tracking.plots=none"]
    seq = gradlab(*grid, "tracking.experiment=sequential", f"hydra.sweep.dir={tmp_path}/a")
    par = gradlab(*grid, "tracking.experiment=parallel", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                  f"hydra.sweep.dir={tmp_path}/b")
    assert seq.returncode == 0 and par.returncode == 0, par.stderr[-2000:]
    results = {}
    client = mlflow.MlflowClient(temp_store)
    for name in ("sequential", "parallel"):
        parents, children = store_runs(temp_store, name)
        assert len(parents) == 1 and len(children) == 6
        assert all(c.info.status == "FINISHED" for c in children)
        for c in children:
            assert len(client.get_metric_history(c.info.run_id, "train_loss")) == 300
        results[name] = {c.data.tags["gradlab.overrides"].replace(f" tracking.experiment={name}", ""): c.data.metrics["final_val_loss"]
                         for c in children}
    assert results["sequential"] == results["parallel"]


@pytest.mark.slow
def test_submitit_local_launcher(temp_store, tmp_path):
    out = gradlab("-m", "hydra/launcher=submitit_local", "optimizer.lr=0.001,0.01", "train.epochs=20",
                  "tracking.plots=none", "tracking.experiment=submitit", f"hydra.sweep.dir={tmp_path}/multirun", timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    parents, children = store_runs(temp_store, "submitit")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == 2 and all(c.info.status == "FINISHED" for c in children)
    assert all(c.data.tags["gradlab.pid"] != parents[0].data.tags["gradlab.pid"] for c in children)  # other processes


# ------------------------------------------------------------------------------ report
def _sweep_for_report(cli):
    code, _, err = cli("-m", "optimizer=gd,adam", "optimizer.lr=0.001,0.01,1.0", "data.scaling=none,factor",
                       "train.epochs=100", "tracking.plots=none", "tracking.experiment=rep")
    assert code == 0, err


def test_report_table_matches_the_runs_and_its_figures_are_made(cli, temp_store, tmp_path):
    _sweep_for_report(cli)
    store = tracking.Store()
    folder = compare.report(store, experiment="rep", out=tmp_path / "report")
    ranking = pd.read_csv(folder / "summary.csv")
    _, children = store_runs(temp_store, "rep")
    assert len(ranking) == len(children) == 12
    # the final loss of each run, as MLflow has it, read here independently
    expected = {}
    for c in children:
        finished = c.data.tags["gradlab.outcome"] in ("completed", "reached_stop_loss")
        expected[c.data.tags["mlflow.runName"]] = c.data.metrics if finished else None
    # ranked by what the sweep is for: at the optimum first, the fewest epochs there, then by the
    # excess; diverged last (the recorded metrics, ordered here by the rule written out)
    def order(c):
        m = expected[c.info.run_name]
        if m is None:
            return (2, 0.0, c.info.run_name)
        if m["excess_loss"] <= 1e-3 * m["optimal_train_loss"] + 1e-9:
            return (0, m["epochs_to_optimum"], c.info.run_name)
        return (1, m["excess_loss"], c.info.run_name)
    assert ranking["run_name"].tolist() == [c.info.run_name for c in sorted(children, key=order)]
    assert ranking["rank"].tolist() == list(range(1, 13))
    assert ranking["verdict"].tolist().count("diverged") == sum(c.data.tags["gradlab.outcome"] == "diverged" for c in children) > 0
    best = pd.read_csv(folder / "best.csv")
    for (opt, scaling), group in ranking.groupby(["optimizer", "scaling"]):
        if group["verdict"].isin(["at_optimum", "slow"]).any():
            row = best[(best["optimizer"] == opt) & (best["scaling"] == scaling)]
            assert row["configuration"].iloc[0] == group["run_name"].iloc[0].split(" · ")[0]  # the group's first
    # epochs to the default threshold (5% above the optimum): the first step of each run's
    # history, as MLflow reads it, at or below it
    threshold = 1.05 * min(c.data.metrics["optimal_train_loss"] for c in children)
    reached = 0
    for c in children:
        hits = [m.step for m in mlflow.MlflowClient(temp_store).get_metric_history(c.info.run_id, "train_loss")
                if m.value <= threshold]
        got = ranking.loc[ranking["run_id"] == c.info.run_id, "epochs_to_threshold"].iloc[0]
        assert got == min(hits) if hits else pd.isna(got)
        reached += bool(hits)
    assert 0 < reached < 12
    md = (folder / "summary.md").read_text()
    assert "12 runs" in md and "diverged" in md and "tracking.objective=auto" in md
    for fig in ("final_loss_vs_lr.png", "excess_loss_vs_lr.png", "convergence_map.png", "loss_curves_best.png"):
        assert (folder / fig).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    parent = mlflow.MlflowClient(temp_store).search_runs(
        [mlflow.MlflowClient(temp_store).get_experiment_by_name("rep").experiment_id], "tags.`gradlab.role` = 'sweep'")[0]
    logged = {a.path for a in mlflow.MlflowClient(temp_store).list_artifacts(parent.info.run_id, "report")}
    assert {"report/summary.md", "report/summary.csv", "report/final_loss_vs_lr.png"} <= logged
    assert parent.data.tags["gradlab.best_run"] == ranking["run_id"].iloc[0]  # one source of "best"

    # --all: every run of the experiment, the sweep's children and single runs beside them, no parent
    from gradlab.record import Job, Origin, record

    for lr in ("0.001", "0.002"):
        record(Job(compose(f"optimizer.lr={lr}", "train.epochs=20", "tracking.plots=none")), Origin("rep"), quiet=True)
    everything = pd.read_csv(compare.report(store, experiment="rep", everything=True, out=tmp_path / "all") / "summary.csv")
    assert len(everything) == 12 + 2
    assert len(pd.read_csv(compare.report(store, experiment="rep", out=tmp_path / "latest") / "summary.csv")) == 12
    # an experiment without any sweep: its runs
    record(Job(compose("optimizer.lr=0.003", "train.epochs=20", "tracking.plots=none")), Origin("solo"), quiet=True)
    assert len(pd.read_csv(compare.report(store, experiment="solo", out=tmp_path / "solo") / "summary.csv")) == 1


def test_params_come_back_typed():
    from gradlab.tracking.query import RunRecord, typed

    raw = {"optimizer.lr": ["0.01", "1.0"], "optimizer.name": ["sgd", "sgd"], "optimizer.momentum": ["0.9", "0.0"],
           "train.batch_size": ["None", "16"], "optimizer.nesterov": ["False", "True"],
           "data.scaling": ["factor", "none"], "data.scale_factor": ["0.1", "0.1"]}  # as MLflow returns them
    records = [RunRecord(rid, rid, "1", status, start, {k: typed(v[i]) for k, v in raw.items()}, metrics,
                         {"gradlab.outcome": outcome})
               for i, (rid, status, start, outcome, metrics) in enumerate(
                   [("a", "FINISHED", 1, "completed", {"final_train_loss": 1.5}), ("b", "FAILED", 2, "diverged", {})])]
    df = compare.tidy(records)
    assert df["optimizer.lr"].tolist() == [0.01, 1.0] and df["lr"].dtype.kind == "f"
    assert df["batch"].tolist() == ["full", "16"] and df["train.batch_size"].isna().tolist() == [True, False]
    assert df["optimizer.nesterov"].tolist() == [False, True]
    assert df["optimizer"].tolist() == ["sgd m=0.9", "sgd"] and df["scaling"].tolist() == ["×0.1", "none"]
    assert df["objective"].tolist()[0] == 1.5 and math.isnan(df["objective"].tolist()[1])
    # a momentum reads in three digits, not as its full float
    searched = [RunRecord("s", "s", "1", "FINISHED", 3, {"optimizer.name": "sgd", "optimizer.momentum": 0.639435},
                          {}, {"gradlab.outcome": "completed"})]
    assert compare.tidy(searched)["optimizer"].tolist() == ["sgd m=0.639"]


def records(*runs) -> list:
    """RunRecords as the store returns them: (id, overrides, params, metrics, outcome) each."""
    from gradlab.tracking.query import RunRecord

    return [RunRecord(rid, f"{over} · x", "1", "FINISHED", i, params, metrics, {"gradlab.outcome": outcome,
                                                                              "gradlab.overrides": over})
            for i, (rid, over, params, metrics, outcome) in enumerate(runs)]


def test_a_method_sweeps_map_ranks_within_each_problem_and_colours_by_verdict():
    # gradient_methods-like: two problems; the line has an optimum, the MLP none; NumPy ran one
    line = {"data.name": "line", "model.name": "linear", "train.loss": "mse"}
    mlp = {"data.name": "teacher", "model.name": "mlp", "train.loss": "mse"}
    opt = {"optimal_train_loss": 1.0}
    df = compare.tidy(records(
        ("a", "method=analytic experiment=lin", {**line, "grad.name": "analytic"}, {**opt, "final_train_loss": 1.0, "excess_loss": 0.0, "at_optimum": 1.0, "epochs_to_optimum": 40.0}, "completed"),
        ("b", "method=autograd experiment=lin", {**line, "grad.name": "autograd"}, {**opt, "final_train_loss": 1.5, "excess_loss": 0.5, "at_optimum": 0.0}, "completed"),
        ("c", "method=analytic experiment=mlp", {**mlp, "grad.name": "analytic"}, {"final_train_loss": 0.3}, "completed"),
        ("d", "method=autograd experiment=mlp", {**mlp, "grad.name": "autograd"}, {"final_train_loss": 0.2}, "completed"),
        ("e", "method=numpy experiment=mlp", {**mlp, "grad.name": "analytic", "device.name": "numpy"}, {}, "diverged")))
    # ranked within each problem, never across: each problem's ranks start at 1
    assert df.groupby("problem")["rank"].min().tolist() == [1, 1]
    assert df.set_index("run_id")["rank"].to_dict() == {"a": 1, "b": 2, "d": 1, "c": 2, "e": 3}
    assert df.set_index("run_id")["verdict"].to_dict() == {"a": "at_optimum", "b": "slow", "c": "no_optimum",
                                                          "d": "no_optimum", "e": "diverged"}
    cells = convergence.cells(compare.entries(df))
    assert (cells["row_key"], cells["col_key"]) == ("method", "experiment")
    by_place = {(c["row"], c["col"]): c["verdict"] for c in cells["cells"]}
    assert by_place == {("analytic", "lin"): "at_optimum", ("autograd", "lin"): "slow", ("analytic", "mlp"): "no_optimum",
                        ("autograd", "mlp"): "no_optimum", ("numpy", "mlp"): "diverged"}
    labels = {(c["row"], c["col"]): convergence.label(c, False) for c in cells["cells"]}
    assert labels[("analytic", "lin")] == "40" and labels[("numpy", "mlp")] == "✖" and labels[("autograd", "lin")] == "+0.5"
    figs = compare.figures(df, pd.DataFrame(columns=["run_id", "step", "metric", "value"]), compare.swept(df), math.nan)
    texts = {t.get_text() for ax in figs["convergence_map.png"].axes for t in ax.texts}
    assert {"40", "✖", "+0.5", "0.3", "0.2"} <= texts


def test_diverged_runs_are_drawn_distinctly_in_the_colour_of_whose_they_are():
    lrs = [1e-3, 1e-2, 1e-1, 1.0]
    runs = [(f"{o}{i}", f"optimizer={o} optimizer.lr={lr}", {"optimizer.name": o, "optimizer.lr": lr,
             "data.name": "thermometer", "model.name": "linear", "train.loss": "mse"},
             {"final_train_loss": 3.0 - i, "optimal_train_loss": 1.0, "excess_loss": 2.0 - i, "at_optimum": 0.0}
             if i < 2 else {}, "completed" if i < 2 else "diverged")
            for o in ("gd", "adam") for i, lr in enumerate(lrs) if o == "gd" or i == 3]
    df = compare.tidy(records(*runs))
    figs = compare.figures(df, pd.DataFrame(columns=["run_id", "step", "metric", "value"]), ["optimizer", "lr"], 1.0)
    ax = figs["final_loss_vs_lr.png"].axes[0]
    palette = compare.colours(df, "optimizer")
    marks = [c for c in ax.collections if c.get_paths() and len(c.get_offsets()) == 1 and
             tuple(c.get_facecolor()[0][:3]) in {tuple(palette[o]) for o in palette}]
    by_colour = {}
    for c in marks:
        by_colour.setdefault(tuple(c.get_facecolor()[0][:3]), []).append(float(c.get_offsets()[0, 0]))
    # gd diverged at 0.1 and 1, adam at 1: each mark in its optimizer's colour, none lost to the other
    assert sorted(by_colour[tuple(palette["gd"])]) == [0.1, 1.0] and by_colour[tuple(palette["adam"])] == [1.0]
    assert max(ax.get_ylim()) < 100  # the marks sit above the panel, not at a huge value


def test_report_on_nothing_says_so(temp_store, capsys):
    tracking.Store().experiment_id("empty")
    for args, words in ((["--experiment", "empty"], "has no runs to compare"),
                        (["--experiment", "nope"], "no experiment 'nope'"),
                        ([], "no sweep in")):
        with pytest.raises(SystemExit) as e:
            compare.main(args)
        assert e.value.code == 2
        assert words in capsys.readouterr().err


@pytest.mark.slow
def test_make_ui_serves_the_store_on_loopback_only(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = Started(["make", "-s", "ui", f"PORT={port}", f"STORE=sqlite:///{tmp_path}/ui.db"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    def health():
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                return r.read().strip()
        except OSError:
            return None

    try:
        assert wait_for(health, timeout=120, every=0.5, proc=proc) == b"OK"
        listening = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True).stdout
        assert listening.strip() and all("127.0.0.1:" in line for line in listening.strip().splitlines())
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


@pytest.mark.slow
def test_ctrl_c_during_a_sweep_marks_the_parent_and_the_running_job_killed(temp_store, tmp_path):
    proc = Started([sys.executable, "-m", "gradlab", "-m", "optimizer.lr=0.001,0.01", "train.epochs=100000000",
                             "tracking.plots=none", f"hydra.sweep.dir={tmp_path}/multirun"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    def first_job_logging():
        _, children = store_runs(temp_store, "default") if store_made(temp_store) else ([], [])
        return children and mlflow.MlflowClient(temp_store).get_metric_history(children[0].info.run_id, "train_loss")

    try:
        wait_for(first_job_logging, timeout=90, every=0.5, proc=proc)
        proc.send_signal(signal.SIGINT)
        proc.communicate()
    finally:
        proc.kill()
    assert proc.returncode == -signal.SIGINT
    parents, children = store_runs(temp_store, "default")
    assert parents[0].info.status == "KILLED" and parents[0].data.tags["gradlab.outcome"] == "killed"
    assert len(children) == 1 and children[0].info.status == "KILLED"  # the second job never started


def _joblib_sweep(tmp_path, env: dict | None = None) -> Started:
    """Four long jobs on two joblib workers, in a session of their own."""
    return Started([sys.executable, "-m", "gradlab", "-m", "train.seed=range(0,4)", "train.epochs=100000000",
                             "tracking.plots=none", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                             f"hydra.sweep.dir={tmp_path}/multirun"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})


def _both_jobs_logging(uri: str):
    _, children = store_runs(uri, "default") if store_made(uri) else ([], [])
    c = mlflow.MlflowClient(uri)
    return len(children) == 2 and all(c.get_metric_history(k.info.run_id, "train_loss") for k in children)


def _workers(launcher: int) -> list[int]:
    """The joblib (loky) worker processes the launcher started."""
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid == launcher and b"LokyProcess" in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except (OSError, ValueError, IndexError):
            continue
    return found


def _settled(uri: str):
    """The sweep's runs once none is RUNNING (recorders end their runs after their trainers are gone)."""
    parents, children = store_runs(uri, "default")
    return all(r.info.status != "RUNNING" for r in parents + children) and (parents, children)


@pytest.mark.slow
@pytest.mark.parametrize("to_group, sig", [(True, signal.SIGINT), (False, signal.SIGTERM)], ids=["ctrl-c", "sigterm-to-launcher"])
def test_a_stopped_joblib_sweep_leaves_no_run_running(temp_store, tmp_path, to_group, sig):
    """Ctrl-C reaches the whole process group, SIGTERM the launcher alone; joblib then SIGKILLs
    each worker's process tree. The runs in flight must still end, KILLED, by their recorders."""
    proc = _joblib_sweep(tmp_path)
    try:
        wait_for(lambda: _both_jobs_logging(temp_store), timeout=120, every=0.5, proc=proc)
        os.killpg(proc.pid, sig) if to_group else proc.send_signal(sig)
        proc.communicate()
    finally:
        proc.kill()
    assert proc.returncode == -sig
    parents, children = wait_for(lambda: _settled(temp_store), timeout=60, every=0.5)
    assert parents[0].info.status == "KILLED"
    assert len(children) == 2 and {(c.info.status, c.data.tags["gradlab.outcome"]) for c in children} == {("KILLED", "killed")}


def test_a_refused_sweep_has_finished_making_its_store_when_it_exits(cli, temp_store):
    """The store is made while the grid is checked; a refused grid must not leave its recorder
    making the store in the background once the command has returned."""
    code, _, err = cli("-m", "optimizer.lr=1e-3,-1")
    assert code == 2 and "nothing was run" in err
    assert store_made(temp_store) and store_runs(temp_store, "default") == ([], [])


@pytest.mark.slow
def test_a_joblib_worker_killed_hard_ends_every_run_and_says_so(temp_store, tmp_path):
    """kill -9 of one worker: loky gives up on the pool. Its run and the one in flight beside it
    end KILLED, the jobs not started never start, the parent is FAILED, and the launcher says so
    in one line (it printed loky's traceback)."""
    proc = _joblib_sweep(tmp_path)
    try:
        wait_for(lambda: _both_jobs_logging(temp_store), timeout=120, every=0.5, proc=proc)
        os.kill(_workers(proc.pid)[0], signal.SIGKILL)
        _, err = proc.communicate()
    finally:
        proc.kill()
    assert proc.returncode == 1 and "Traceback" not in err, err
    assert "a worker process of the sweep's launcher died (exit codes {SIGKILL(-9)})" in err
    parents, children = wait_for(lambda: _settled(temp_store), timeout=60, every=0.5)
    assert parents[0].info.status == "FAILED" and parents[0].data.tags["gradlab.error.type"] == "TerminatedWorkerError"
    assert len(children) == 2 and {(c.info.status, c.data.tags["gradlab.outcome"]) for c in children} == {("KILLED", "killed")}


@pytest.mark.slow
def test_a_launcher_killed_hard_takes_its_workers_along(temp_store, tmp_path):
    """kill -9 of the launcher: its workers lived on as orphans (13 minutes, running more jobs).
    Each now stops its job as SIGTERM would (KILLED, its history kept) and exits, leaving no
    spilled history behind (an exit that skips finalizers left their folders in the temp folder)."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    proc = _joblib_sweep(tmp_path, {"TMPDIR": str(temp)})
    try:
        wait_for(lambda: _both_jobs_logging(temp_store), timeout=120, every=0.5, proc=proc)
        wait_for(lambda: len(list(temp.glob("gradlab-history-*"))) == 2, timeout=120, every=0.5, proc=proc)  # both spill
        workers = _workers(proc.pid)
        proc.kill()
        proc.communicate()
        wait_for(lambda: not any(processes.alive(w, None) for w in workers), timeout=30, every=0.2)  # zombies count as gone
    finally:
        proc.kill()
    _, children = wait_for(lambda: _settled(temp_store), timeout=60, every=0.5)
    assert len(workers) == 2 and len(children) == 2  # no job started after the launcher died
    client = mlflow.MlflowClient(temp_store)
    for c in children:
        assert (c.info.status, c.data.tags["gradlab.signal"]) == ("KILLED", "SIGTERM")
        history = pd.read_csv(client.download_artifacts(c.info.run_id, "history.csv", str(tmp_path)))
        assert len(history) > 65_536 and history["epoch"].is_monotonic_increasing  # spilled rows read back
    assert not list(temp.glob("gradlab-history-*"))


def _recorders(session: int) -> list[int]:
    """The recorder processes of a command started in a session of its own, oldest first."""
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if os.getsid(int(entry.name)) == session and b"recorder.server import serve" in (entry / "cmdline").read_bytes():
                found.append((int((entry / "stat").read_text().rsplit(")", 1)[1].split()[19]), int(entry.name)))
        except (OSError, ValueError):
            continue
    return [pid for _, pid in sorted(found)]


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["joblib", "batched"])
def test_a_sweep_whose_recorders_are_killed_leaves_no_run_running(temp_store, tmp_path, launcher):
    """kill -9 of the parent's recorder (joblib: the launcher's; batched: both of its recorders)
    left the parent RUNNING, and the batched launcher printed a traceback."""
    how = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"] if launcher == "joblib" else ["hydra/launcher=batched"]
    # joblib: the jobs go on after the kill, so short ones (all four run); batched: the batch must still be training
    epochs = 60000 if launcher == "joblib" else 300000
    proc = Started([sys.executable, "-m", "gradlab", "-m", "train.seed=range(0,4)", f"train.epochs={epochs}",
                             "tracking.plots=none", *how, f"hydra.sweep.dir={tmp_path}/multirun"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: _both_jobs_logging(temp_store) if launcher == "joblib" else len(store_runs(temp_store, "default")[1]) == 4,
                 timeout=120, every=0.5, proc=proc)
        recorders = _recorders(proc.pid)
        for pid in recorders[:1] if launcher == "joblib" else recorders:
            os.kill(pid, signal.SIGKILL)
        _, err = proc.communicate()
    finally:
        proc.kill()
    assert "Traceback" not in err, err
    parents, children = wait_for(lambda: _settled(temp_store), timeout=30, every=0.5)
    assert len(parents) == 1 and len(children) == 4
    if launcher == "joblib":  # the workers' recorders were alive: every job ran and was recorded
        assert proc.returncode == 0 and {c.info.status for c in children + parents} == {"FINISHED"}
    else:  # the batch's trainer ended its runs itself, with their histories
        assert proc.returncode == 1 and "gradlab: error: the gradlab recorder process stopped" in err
        assert parents[0].info.status == "FAILED" and {c.info.status for c in children} == {"FAILED"}
        client = mlflow.MlflowClient(temp_store)
        for c in children:
            history = pd.read_csv(client.download_artifacts(c.info.run_id, "history.csv", str(tmp_path / c.info.run_id)))
            assert len(history) == int(c.data.metrics["epochs_run"]) > 1


@pytest.mark.slow
def test_a_recorder_that_dies_with_a_batchs_ends_unwritten_leaves_no_run_running(temp_store, tmp_path):
    """The batched launcher trains its next batch while the last one's ends are written. A
    recorder stopped (SIGSTOP) holding runs left them RUNNING; under load the sweep then hung at
    its exit on the stopped recorder's full pipe (300 s a recorder), and its write lock on the
    store failed every other write (the first batch and the parent left RUNNING). A recorder
    that stays stopped is now killed by the sweep itself, and its runs end as a dead one's."""
    proc = Started([sys.executable, "-m", "gradlab", "-m", "train.epochs=150000,150001", "train.seed=0,1",
                    "tracking.plots=none", "hydra/launcher=batched", f"hydra.sweep.dir={tmp_path}/multirun"],
                   cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with proc:
        # Read only a store gradlab made (WAL: readers never wait on a writer); a client opening
        # it first would make it in rollback mode, where the stopped writer locks out readers too.
        wait_for(lambda: store_made(temp_store) and len(store_runs(temp_store, "default")[1]) == 2,
                 timeout=120, every=0.2, proc=proc)  # the first batch
        sibling = _recorders(proc.pid)[-1]  # forked by the first recorder, which holds the parent
        os.kill(sibling, signal.SIGSTOP)
        out, err = proc.communicate()  # no kill from here: the sweep finds its stopped recorder
    assert "Traceback" not in err, err
    assert not processes.alive(sibling, None), "the stopped recorder was left behind"
    parents, children = store_runs(temp_store, "default")
    assert [r.info.status for r in parents + children if r.info.status == "RUNNING"] == [], out + err
    assert sorted(c.data.params["train.epochs"] for c in children) == ["150000"] * 2 + ["150001"] * 2, out + err
    # Only the stopped recorder's run is touched: ended from the trainer with its history if it
    # was still training, else (its end sent, never written) FAILED; the other recorder's run and
    # the next batch (on a new recorder) are results.
    hit = [c for c in children if "gradlab.recorder_gone" in c.data.tags or c.data.tags.get("gradlab.error.type") == "RecorderGone"]
    assert len(hit) == 1 and hit[0].data.params["train.epochs"] == "150000", out + err
    assert all(c.info.status == "FINISHED" for c in children if c not in hit), out + err
    if hit[0].info.status == "FINISHED":
        assert len(history(temp_store, hit[0].info.run_id)) > 100
    failed = hit[0].info.status == "FAILED"
    assert proc.returncode == int(failed) and parents[0].info.status == ("FAILED" if failed else "FINISHED"), out + err


@pytest.mark.parametrize("name", ["../../escape", "/tmp/gradlab-abs-escape", "a" * 300, "ü" * 200], ids=["up", "absolute", "long", "long-unicode"])
def test_a_report_stays_in_reports_whatever_the_experiment_is_called(cli, temp_store, tmp_path, monkeypatch, name):
    """A name of 256-500 characters (MLflow allows 500) exited 2 with "File name too long" and
    left its runs RUNNING: its artifact folder and its report folder are named from it."""
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    code, _, err = cli("-m", "optimizer.lr=0.01,0.02", "train.epochs=20", "tracking.plots=none", f"tracking.experiment='{name}'")
    assert code == 0, err
    folder = compare.report(tracking.Store(), experiment=name).resolve()
    assert folder.parent == (tmp_path / "work" / "reports").resolve() and (folder / "summary.md").exists()
    assert not (tmp_path / "escape").exists() and not Path("/tmp/gradlab-abs-escape").exists()
    parents, children = store_runs(temp_store, name)
    assert {r.info.status for r in parents + children} == {"FINISHED"} and len(children) == 2


def test_make_ui_shows_the_store_the_environment_names(tmp_path):
    uri = f"sqlite:///{tmp_path}/elsewhere.db"
    dry = subprocess.run(["make", "-n", "-s", "ui"], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, "MLFLOW_TRACKING_URI": uri})
    assert f'MLFLOW_TRACKING_URI="{uri}"' in dry.stdout and "gradlab ui" in dry.stdout, dry.stdout + dry.stderr


def test_an_earlier_writes_error_does_not_keep_the_sweeps_end_from_being_written(capsys):
    """A recorder answers an earlier message's failure at the next send, before taking the
    parent's end: that error escaped the sweep's end, leaving the parent RUNNING."""
    from gradlab.tracking.ends import end_parent
    from gradlab.tracking import TrackingError
    from gradlab.tracking.spec import RunEnd

    class Replying:  # a recorder with one error reply waiting, as Recorder.poll raises it
        def __init__(self):
            self.waiting, self.written = ["log_batch: database is locked"], []

        def finish(self, keys, ends):
            if self.waiting:
                raise TrackingError(self.waiting.pop())
            self.written += [(k, e.outcome) for k, e in zip(keys, ends)]

        def sync(self):
            pass

        def finish_here(self, keys, ends):
            self.written += [(k, e.outcome, "here") for k, e in zip(keys, ends)]

    rec = Replying()
    end_parent(rec, 7, RunEnd("completed"))
    assert rec.written and rec.written[0][:2] == (7, "completed")
    assert "gradlab: error: log_batch: database is locked" in capsys.readouterr().err


def test_a_record_that_failed_as_the_sweep_ends_fails_the_sweep_and_ends_its_parent(monkeypatch, capsys):
    """The recorders' last writes are waited for at the sweep's end; an error they reported then
    escaped it, leaving the parent RUNNING."""
    from gradlab.multirun.context import SweepContext
    from gradlab.multirun.sweep import Sweep
    from gradlab.tracking import REGISTRY, TrackingError

    class Failing:  # a recorder whose last run's end failed to be written (a full disk, say)
        alive, holds_runs, run_ids, _starting = (lambda self: True), True, {}, {}

        def __init__(self):
            self.waiting, self.ends = ["Finish: database or disk is full"], []

        def failures(self):
            return []

        def sync(self):
            if self.waiting:
                raise TrackingError(self.waiting.pop())

        def ask(self, query, *args):
            return []

        def finish(self, keys, ends):
            self.ends += ends

    rec = Failing()
    monkeypatch.setattr(REGISTRY, "everyone", lambda: [rec])
    sweep = Sweep(SweepContext("p", "grid", "e", "sqlite:///unused.db"), recorder=rec, key=1)
    assert sweep.finish().failed >= 1
    (end,) = rec.ends
    assert end.outcome == "failed" and "database or disk is full" in end.tags["gradlab.error.message"]
    assert "gradlab: error: recording a run of sweep 'grid': Finish: database or disk is full" in capsys.readouterr().err


@pytest.mark.slow
def test_a_signal_while_a_batched_sweep_writes_its_records_keeps_every_finished_run_whole(temp_store, tmp_path):
    """SIGTERM to the group once a batch has been recorded and the next trains: the runs of the
    batches that finished training keep their whole record (they ended KILLED without history,
    their ends still queued to a second recorder); the runs in flight end KILLED with theirs."""
    proc = Started([sys.executable, "-m", "gradlab", "-m", "hydra/launcher=batched", "hydra.launcher.max_batch=4",
                             "optimizer.lr=0.001,0.002,0.003,0.004,0.005,0.006,0.007,0.008", "train.epochs=100000",
                             "train.log_every=100", "tracking.experiment=stopped", f"hydra.sweep.dir={tmp_path}/multirun"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def second_batch_training():
        _, children = store_runs(temp_store, "stopped") if store_made(temp_store) else ([], [])
        return len(children) == 8 and children

    try:
        wait_for(second_batch_training, timeout=300, every=0.5, proc=proc)
        os.killpg(proc.pid, signal.SIGTERM)
        proc.communicate()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    parents, children = wait_for(lambda: _settled_in(temp_store, "stopped"), timeout=120)
    assert parents[0].info.status == "KILLED"
    client = mlflow.MlflowClient(temp_store)
    for c in children:
        assert c.info.status in ("FINISHED", "KILLED"), c.info.status
        assert "history.csv" in {a.path for a in client.list_artifacts(c.info.run_id)}, c.info.run_name
        if int(c.data.metrics.get("epochs_run", 0)) == 100000:  # it finished training: its end is its result
            assert c.info.status == "FINISHED" and "final_train_loss" in c.data.metrics


def _settled_in(uri: str, experiment: str):
    parents, children = store_runs(uri, experiment)
    return all(r.info.status != "RUNNING" for r in parents + children) and (parents, children)


def test_three_recorders_record_a_sweep(cli, temp_store):
    """Every recorder but the first died with EBADF as it started (each closed pipes its parent had
    closed already): no job ran."""
    code, _, err = cli("-m", "hydra/launcher=batched", "hydra.launcher.recorders=3", "optimizer.lr=0.01,0.02,0.03",
                       "train.epochs=20", "tracking.plots=none", "tracking.experiment=three")
    assert code == 0, err
    parents, children = store_runs(temp_store, "three")
    assert parents[0].info.status == "FINISHED" and sorted(c.info.status for c in children) == ["FINISHED"] * 3


def test_jobs_that_differ_only_in_their_run_names_are_each_counted(cli, temp_store):
    """Both children were recorded FINISHED, but the sweep kept one per config hash (the run name
    is not part of it), said "1 job(s) ended before their run existed" and failed the parent."""
    code, out, err = cli("-m", 'tracking.run_name="a=b","plain"', "train.epochs=5", "tracking.plots=none",
                         "tracking.experiment=names")
    assert code == 0, err
    assert "2 jobs: 2 finished" in out and "before their run existed" not in out
    parents, children = store_runs(temp_store, "names")
    assert parents[0].info.status == "FINISHED" and sorted(c.info.run_name for c in children) == ["a=b", "plain"]


CRASHING = '''import os, signal
calls = 0


def bowl(theta):
    """(x-1)^2 + (y-1)^2; the process segfaults at its CRASH_AFTER-th call (a batch's crash)."""
    global calls
    calls += 1
    if calls > int(os.environ["CRASH_AFTER"]):
        os.kill(os.getpid(), signal.SIGSEGV)
    return ((theta - 1) ** 2).sum()
'''


@pytest.mark.slow
def test_a_hard_crash_in_the_next_batch_keeps_the_last_batchs_finished_ends(temp_store, tmp_path):
    """The batched launcher sends a batch's ends and trains the next while they are written. A
    segfault in batch 2 lost batch 1's ends still waiting in the trainer's memory: its finished
    runs were KILLED without history."""
    (tmp_path / "crashing.py").write_text(CRASHING)
    proc = Started([sys.executable, "-m", "gradlab", "-m", "model=objective", "data=none",
                    f"model.target={tmp_path}/crashing.py:bowl", "model.start=[0,0]", "train.epochs=20000,20001",
                    "train.seed=0,1,2,3", "tracking.plots=none", "hydra/launcher=batched",
                    f"hydra.sweep.dir={tmp_path}/multirun"],
                   cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                   env={**os.environ, "CRASH_AFTER": "20100"})  # early in batch 2: batch 1 still being written
    with proc:
        out, err = proc.communicate()
        assert proc.returncode == -signal.SIGSEGV, out + err
        parents, children = wait_for(lambda: _settled(temp_store), timeout=60, every=0.5, proc=None)
    first = [c for c in children if c.data.params["train.epochs"] == "20000"]
    assert sorted(c.info.status for c in first) == ["FINISHED"] * 4, [c.data.tags.get("gradlab.reason") for c in first]
    for c in first:
        assert len(history(temp_store, c.info.run_id)) == 20000
    assert {c.info.status for c in children if c not in first} <= {"KILLED"} and parents[0].info.status == "KILLED"


@pytest.mark.slow
def test_two_resumes_of_one_sweep_at_once_train_each_job_once(temp_store, tmp_path):
    """Two `tracking.skip_finished=true` resumes started together both reopened the parent and
    trained every remaining job: each recorded twice. One claims the sweep; the other refuses
    in one line while that one holds it."""
    args = ["-m", "hydra/launcher=batched", "optimizer.lr=0.01,0.02,0.03,0.04", "train.epochs=30000",
            "tracking.plots=none", "tracking.skip_finished=true"]
    procs = [Started([sys.executable, "-m", "gradlab", *args, f"hydra.sweep.dir={tmp_path}/m{i}"], cwd=ROOT,
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    results = []
    for p in procs:
        with p:
            out, err = p.communicate()
            results.append((p.returncode, out, err))
    assert sorted(code for code, _, _ in results) == [0, 2], results
    refused = next(err for code, _, err in results if code == 2)
    assert "is being run by process" in refused and "Traceback" not in refused, refused
    parents, children = store_runs(temp_store, "default")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert sorted(c.data.params["optimizer.lr"] for c in children) == ["0.01", "0.02", "0.03", "0.04"]
