"""The sweep wing's own parts: one run_sweep for the CLI and the API with typed errors, the
context a worker receives as one value, and a recorder that says whose record failed."""

from __future__ import annotations

import os
import re

import mlflow
import pytest

from conftest import wait_for

from gradlab.multirun.context import VARIABLE, SweepContext, inherited
from gradlab.multirun.run import run_sweep
from gradlab.options import OverrideError, SweepRefused


def test_a_context_crosses_to_a_worker_as_one_value(monkeypatch):
    ctx = SweepContext("p1", "grid", "exp", "sqlite:////tmp/x.db", ["optimizer", "optimizer.lr"], 1234)
    env = ctx.environment()
    assert set(env) == {VARIABLE, "MLFLOW_TRACKING_URI"} and env["MLFLOW_TRACKING_URI"] == ctx.uri
    monkeypatch.setenv(VARIABLE, env[VARIABLE])
    assert inherited() == ctx
    monkeypatch.delenv(VARIABLE)
    assert inherited() is None


def test_run_sweep_refuses_in_typed_errors_before_any_run(temp_store, runs, tmp_path):
    with pytest.raises(SweepRefused) as refused:
        run_sweep(["optimizer.lr=0.01,-1", "train.epochs=3", f"hydra.sweep.dir={tmp_path}"])
    assert "1 of 2 jobs have bad values; nothing was run" in str(refused.value)
    assert "[optimizer.lr=-1 train.epochs=3]: optimizer.lr=-1.0 is not allowed" in str(refused.value)
    with pytest.raises(OverrideError, match="optimizer=adamm: no such option; the options are"):
        run_sweep(["optimizer=adamm,gd", f"hydra.sweep.dir={tmp_path}"])
    assert runs() == [] and VARIABLE not in os.environ


def test_run_sweep_returns_how_the_sweep_ended(temp_store, tmp_path):
    outcome = run_sweep(["optimizer.lr=0.01,0.02", "train.epochs=5", "tracking.plots=none", "hydra/launcher=batched",
                         f"hydra.sweep.dir={tmp_path}"])
    assert (outcome.name, outcome.experiment, outcome.failed, outcome.counts["jobs"]) == ("multirun", "default", 0, 2)
    parent = mlflow.MlflowClient(temp_store).get_run(outcome.parent_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["gradlab.varied"] == "optimizer.lr"
    assert VARIABLE not in os.environ  # the sweep's context goes with it


def test_a_failed_record_is_said_of_its_own_runs_not_of_a_later_request(temp_store):
    """A request's failure comes back naming its runs: a later request about other runs goes on,
    and the failure is reported once, by failures() (the sweep's end) or sync() (a single run)."""
    from gradlab.tracking import TrackingError
    from gradlab.tracking.recorder.client import Recorder
    from gradlab.tracking.spec import RunEnd, RunSpec

    (rec,) = Recorder.group()
    try:
        rec.open(temp_store)
        (key,) = rec.start([RunSpec("failures", "a run", {}, {})])
        rec.run_id(key)
        rec.log({99: [("train_loss", 1.0, 1)]})  # a run this recorder never made: its record fails
        rec.sync()
    except TrackingError as e:  # a single run waits for its end: said there
        assert str(e).startswith("Log: ")
    else:
        raise AssertionError("sync said nothing of the failed Log")
    rec.log({98: [("train_loss", 1.0, 1)]})  # fails again, unwaited
    rec.log({key: [("train_loss", 1.0, 1)]})  # a later request about another run: not blamed
    rec.log({key: [("train_loss", 0.5, 2)]})
    said: list[str] = []
    wait_for(lambda: said.extend(rec.failures()) or said)  # the recorder's reply, as it comes
    assert [f.split(":")[0] for f in said] == ["Log"] and rec.failures() == []
    rec.finish([key], [RunEnd("completed")])
    rec.sync()
    run = mlflow.MlflowClient(temp_store).get_run(rec.run_ids[key])
    assert run.info.status == "FINISHED" and run.data.metrics["train_loss"] == 0.5
    rec.close(60)


def test_a_sweep_says_how_far_it_has_got_off_a_terminal_and_on_its_parent(temp_store, tmp_path, capsys, monkeypatch):
    from gradlab.multirun import sweep

    monkeypatch.setattr(sweep, "PROGRESS_SECONDS", 0.0)  # every batch, for the test
    outcome = run_sweep(["optimizer=gd,adam", "optimizer.lr=0.01,10", "train.epochs=30", "tracking.plots=none",
                         "hydra/launcher=batched", f"hydra.sweep.dir={tmp_path}"])
    lines = [ln for ln in capsys.readouterr().out.splitlines() if "jobs done" in ln]
    # two batches (gd, adam) of two; gd at lr 10 diverges on the thermometer
    assert [re.search(r"\d+/\d+ jobs done", ln)[0] for ln in lines] == ["2/4 jobs done", "4/4 jobs done"]
    assert f"4/4 jobs done, {outcome.counts['diverged']} diverged" in lines[-1] and outcome.counts["diverged"] >= 1
    # the clock starts with the sweep, not at its first line: that line said "0 s so far, about 0 s to go"
    so_far = float(re.search(r"([\d.]+) s so far", lines[0])[1])
    assert so_far > 0 and "about 0.0 s to go" not in lines[0]
    parent = mlflow.MlflowClient(temp_store).get_run(outcome.parent_id)
    assert parent.data.tags["gradlab.jobs_done"] == "4/4"
