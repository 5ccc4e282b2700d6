"""The console script end to end, into a temporary store, read back through MLflow's own API."""

from __future__ import annotations

import csv
import io
import json
import math

import mlflow
import pytest

from conftest import compose, gradlab
from gradlab import training


def read_artifact(run_id: str, path: str) -> str:
    return mlflow.artifacts.load_text(f"runs:/{run_id}/{path}")


def test_console_script_records_a_complete_run(temp_store):
    proc = gradlab("train.epochs=40", "optimizer.momentum=0.5")
    assert proc.returncode == 0, proc.stderr
    assert "completed after 40 epochs" in proc.stdout

    mlflow.set_tracking_uri(temp_store)
    df = mlflow.search_runs(experiment_names=["default"])
    assert len(df) == 1
    row = df.iloc[0]
    assert row["status"] == "FINISHED"
    # led by the command line's choices, then the run's in full
    assert row["tags.mlflow.runName"] == "epochs=40 m=0.5 · thermometer-x0.1-linear-autograd-sgd-m0.5-lr0.01"
    assert row["tags.gradlab.outcome"] == "completed"
    # params: the composed config, flattened, plus the sizes
    assert row["params.optimizer.momentum"] == "0.5" and row["params.optimizer.lr"] == "0.01"
    assert row["params.data.scale_factor"] == "0.1" and row["params.train.epochs"] == "40"
    assert (row["params.n_train"], row["params.n_val"], row["params.n_params"]) == ("9", "2", "2")
    # final metrics
    for m in ("final_train_loss", "final_val_loss", "best_val_loss", "epochs_run", "optimal_train_loss",
              "excess_loss", "train_seconds"):
        assert math.isfinite(row[f"metrics.{m}"]), m
    assert row["metrics.epochs_run"] == 40
    assert row["metrics.excess_loss"] == pytest.approx(row["metrics.final_train_loss"] - row["metrics.optimal_train_loss"])

    run_id = row["run_id"]
    client = mlflow.MlflowClient()
    # the UI opens on the runs table for training experiments, and charts final metrics as bars
    assert mlflow.get_experiment_by_name("default").tags["mlflow.experimentKind"] == "custom_model_development"
    assert [m.step for m in client.get_metric_history(run_id, "final_val_loss")] == [0]
    history = list(csv.DictReader(io.StringIO(read_artifact(run_id, "history.csv"))))
    assert [int(h["epoch"]) for h in history] == list(range(1, 41))
    logged = {m.step: m.value for m in client.get_metric_history(run_id, "train_loss")}
    assert min(logged) == 1 and max(logged) == 40  # first and last steps always logged, 1-based
    for step, value in logged.items():
        assert float(history[step - 1]["train_loss"]) == pytest.approx(value, rel=1e-6)
    for key in ("val_loss", "grad_norm"):
        assert len(client.get_metric_history(run_id, key)) == 40

    params = json.loads(read_artifact(run_id, "params.json"))
    # The runs table shows a metric's last point: for param.* it is the parameter after the last
    # update, which a run one epoch longer records at the start of its epoch 41.
    longer = training.train(compose("train.epochs=41", "optimizer.momentum=0.5"))[1].history
    for name in ("w", "b"):
        points = client.get_metric_history(run_id, f"param.{name}")
        assert sorted(m.step for m in points) == list(range(1, 42))
        last = max(points, key=lambda m: m.step).value
        assert last == pytest.approx(longer.column(f"param.{name}")[40], rel=1e-6)
        assert last == pytest.approx(params["params"][name][0] if isinstance(params["params"][name], list)
                                     else params["params"][name], rel=1e-6)
        assert row[f"metrics.param.{name}"] == last
    assert set(params["params"]) == {"w", "b"} and set(params["optimum"]) == {"w", "b"}
    assert "momentum: 0.5" in read_artifact(run_id, "config.yaml")
    assert "optimizer.momentum=0.5" in read_artifact(run_id, "overrides.txt")
    names = {a.path for a in client.list_artifacts(run_id, "plots")}
    assert names == {"plots/loss_curves.png", "plots/fit.png", "plots/trajectory.png"}


def test_diverged_run_exits_zero_and_is_recorded_as_a_result(temp_store):
    proc = gradlab("experiment=thermometer_handgrad_raw", "optimizer.lr=0.01", "train.epochs=3000")
    assert proc.returncode == 0, proc.stderr
    assert "diverged" in proc.stdout
    mlflow.set_tracking_uri(temp_store)
    (run,) = mlflow.MlflowClient().search_runs([mlflow.get_experiment_by_name("thermometer_handgrad_raw").experiment_id])
    assert run.info.status == "FAILED"
    tags = run.data.tags
    assert tags["gradlab.outcome"] == "diverged"
    step = int(tags["gradlab.diverged_step"])
    assert f"at step {step}" in tags["gradlab.reason"]
    metrics = run.data.metrics
    assert all(math.isfinite(v) for v in metrics.values())
    assert metrics["epochs_run"] == step - 1 and metrics["diverged_step"] == step and metrics["at_optimum"] == 0
    # No loss of the exploded parameters: the last recorded ones instead
    assert not {"final_train_loss", "final_val_loss", "excess_loss"} & set(metrics)
    history = list(csv.DictReader(io.StringIO(read_artifact(run.info.run_id, "history.csv"))))
    assert metrics["last_train_loss"] == pytest.approx(float(history[-1]["train_loss"]), rel=1e-6)
    assert "val_loss" not in history[-1] and "last_val_loss" not in metrics  # this recipe holds no points out
    logged = mlflow.MlflowClient().get_metric_history(run.info.run_id, "train_loss")
    assert max(m.step for m in logged) == step - 1 and all(math.isfinite(m.value) for m in logged)
