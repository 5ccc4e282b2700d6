"""The loop's contract: what a row means, divergence, stopping, determinism, every pairing."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch

from conftest import compose
from gradlab import training

T_U = torch.tensor([35.7, 55.9, 58.2, 81.9, 56.3, 48.9, 33.9, 21.8, 48.4, 60.4, 68.4], dtype=torch.float64)
T_C = torch.tensor([0.5, 14.0, 15.0, 28.0, 11.0, 8.0, 3.0, -4.0, 6.0, 13.0, 21.0], dtype=torch.float64)


def train(*overrides):
    return training.train(compose(*overrides))


def test_first_row_is_the_state_before_any_update():
    s, r = train("experiment=thermometer_handgrad_raw", "train.dtype=float64", "train.epochs=2")
    row = next(r.history.records())
    err = 1.0 * T_U + 0.0 - T_C
    assert row["param.w"] == 1.0 and row["param.b"] == 0.0
    assert row["train_loss"] == pytest.approx(float((err**2).mean()), rel=1e-15)
    grad = torch.stack([(2 * err * T_U).mean(), (2 * err).mean()])  # ∂MSE/∂(w, b), by hand
    assert row["grad_norm"] == pytest.approx(float(grad.norm()), rel=1e-12)


def test_divergence_stops_at_once_and_logs_nothing_non_finite():
    s, r = train("experiment=thermometer_handgrad_raw", "optimizer.lr=1e-2", "train.epochs=5000")
    h = r.history
    assert h.outcome == "diverged"
    assert h.stop_step is not None and h.stop_step < 5000
    assert h.epochs_run == h.stop_step - 1
    assert "train_loss is inf" in h.reason or "train_loss is nan" in h.reason or "grad_norm" in h.reason
    assert all(math.isfinite(v) for row in h.records() for v in row.values())
    assert all(math.isfinite(v) for v in r.metrics.values())
    assert r.metrics["at_optimum"] == 0.0 and "epochs_to_optimum" not in r.metrics


def test_stop_loss_converges_early():
    s, r = train("experiment=thermometer_handgrad_scaled", "train.stop_loss=3.0")
    h = r.history
    assert h.outcome == "reached_stop_loss" and h.epochs_run < 5000
    assert h.column("train_loss")[-1] <= 3.0 < h.column("train_loss")[-2]  # stopped after the first epoch at or below it


def test_log_every_records_first_multiples_and_last():
    s, r = train("train.epochs=23", "train.log_every=5")
    assert r.history.column("epoch") == [1, 5, 10, 15, 20, 23]


@pytest.mark.parametrize("overrides", [
    ["optimizer=sgd", "optimizer.momentum=0.9", "train.batch_size=3", "train.shuffle=true"],
    ["experiment=noisy_line_batches", "train.epochs=300"],
    ["experiment=mlp_sigmoid", "train.epochs=50", "train.batch_size=16", "train.shuffle=true"],
])
def test_same_seed_gives_bit_identical_histories(overrides):
    _, a = train(*overrides, "train.epochs=300" if "experiment" not in overrides[0] else "train.seed=3")
    _, b = train(*overrides, "train.epochs=300" if "experiment" not in overrides[0] else "train.seed=3")
    assert list(a.history.records()) == list(b.history.records())
    assert a.params == b.params


def test_minibatch_epoch_loss_is_the_size_weighted_mean_of_batch_losses():
    # 9 training samples in batches of 4, 4, 1: the epoch's loss weights each batch by its size.
    s, r = train("optimizer=gd", "grad=analytic", "train.batch_size=4", "train.epochs=1", "train.dtype=float64",
                 "model.start.w=1", "model.start.b=0")
    x, y = s.prepared[0].x_train[:, 0], s.prepared[0].y_train
    w, b, lr, total = 1.0, 0.0, 0.01, 0.0
    for i in range(0, 9, 4):
        xb, yb = x[i:i + 4], y[i:i + 4]
        e = w * xb + b - yb
        total += float((e**2).mean()) * len(xb)
        w, b = w - lr * float((2 * e * xb).mean()), b - lr * float((2 * e).mean())
    assert r.history.column("train_loss")[0] == pytest.approx(total / 9, rel=1e-12)
    assert r.params["w"][0] == pytest.approx(w, rel=1e-12) and r.params["b"] == pytest.approx(b, rel=1e-12)


@pytest.mark.parametrize("optimizer", ["gd", "sgd", "adam", "adamw", "rmsprop", "adagrad", "lbfgs"])
@pytest.mark.parametrize("grad", ["analytic", "autograd", "finite_difference"])
def test_every_gradient_method_pairs_with_every_optimizer(optimizer, grad):
    s, r = train(f"optimizer={optimizer}", f"grad={grad}", "train.epochs=20", "train.dtype=float64")
    losses = r.history.column("train_loss")
    assert r.history.outcome == "completed"
    assert losses[-1] < losses[0]


def test_same_optimizer_same_path_whichever_gradient_method():
    _, a = train("optimizer=adam", "grad=analytic", "train.epochs=200", "train.dtype=float64")
    _, b = train("optimizer=adam", "grad=autograd", "train.epochs=200", "train.dtype=float64")
    np.testing.assert_allclose(a.history.column("train_loss"), b.history.column("train_loss"), rtol=1e-10)


@pytest.mark.parametrize("grad", ["autograd", "finite_difference"])
def test_lbfgs_reaches_the_least_squares_line(grad):
    _, r = train("optimizer=lbfgs", "optimizer.line_search_fn=strong_wolfe", "train.epochs=10", f"grad={grad}",
                 "train.dtype=float64", "data.val_fraction=null")
    x = 0.1 * T_U.numpy()
    slope, intercept = np.linalg.lstsq(np.stack([x, np.ones(11)], 1), T_C.numpy(), rcond=None)[0]  # numpy's, not gradlab's
    tol = 1e-5 if grad == "autograd" else 1e-4  # L-BFGS stops at its own tolerance_grad
    assert r.params["w"][0] == pytest.approx(slope, abs=tol) and r.params["b"] == pytest.approx(intercept, abs=tol)
    row = next(r.history.records())
    w0, b0 = row["param.w"], row["param.b"]
    e = w0 * torch.tensor(x) + b0 - T_C
    start_grad = float(torch.stack([(2 * e * torch.tensor(x)).mean(), (2 * e).mean()]).norm())
    assert row["grad_norm"] == pytest.approx(start_grad, rel=1e-3 if grad == "finite_difference" else 1e-9)


def test_final_metrics_use_the_final_parameters():
    s, r = train("train.epochs=50", "train.dtype=float64")
    w, b = r.params["w"][0], r.params["b"]
    x, y = s.prepared[0].x_train[:, 0], s.prepared[0].y_train
    assert r.metrics["final_train_loss"] == pytest.approx(float(((w * x + b - y) ** 2).mean()), rel=1e-12)
    xv, yv = s.prepared[0].x_val[:, 0], s.prepared[0].y_val
    assert r.metrics["final_val_loss"] == pytest.approx(float(((w * xv + b - yv) ** 2).mean()), rel=1e-12)
    assert r.metrics["best_val_loss"] == min(r.history.column("val_loss") + [r.metrics["final_val_loss"]])


def test_at_optimum_flag_excess_epochs_to_optimum_and_log10_companions():
    # gd with lr 0.01 on the scaled thermometer reaches the least-squares line (numpy's lstsq) in
    # its 5000 epochs; after 20 it is far from it.
    _, done = train("experiment=thermometer_handgrad_scaled", "train.dtype=float64")
    _, early = train("experiment=thermometer_handgrad_scaled", "train.dtype=float64", "train.epochs=20")
    x = 0.1 * T_U.numpy()
    design = np.stack([x, np.ones(11)], 1)
    coef = np.linalg.lstsq(design, T_C.numpy(), rcond=None)[0]
    optimum = float(((design @ coef - T_C.numpy()) ** 2).mean())
    for r in (done, early):
        excess = r.metrics["final_train_loss"] - optimum
        assert r.metrics["excess_loss"] == pytest.approx(max(excess, 0.0), abs=1e-12)
        assert r.metrics["log10_final_train_loss"] == pytest.approx(math.log10(r.metrics["final_train_loss"]))
        assert r.metrics["log10_lr"] == pytest.approx(-2.0)
    assert done.metrics["at_optimum"] == 1.0 and early.metrics["at_optimum"] == 0.0
    assert "epochs_to_optimum" not in early.metrics
    assert early.metrics["log10_excess_loss"] == pytest.approx(math.log10(early.metrics["excess_loss"]))
    # The epochs to the optimum, by a plain loop of the same updates (gd, lr 0.01, float64, from
    # w=1, b=0): the first epoch after which the loss stays within 1e-3·optimum of the optimum.
    w, b, losses = 1.0, 0.0, []
    for _ in range(5000):
        err = w * x + b - T_C.numpy()
        losses.append(float((err ** 2).mean()))
        w, b = w - 0.01 * float((2 * err * x).mean()), b - 0.01 * float((2 * err).mean())
    level = optimum + 1e-3 * optimum + 1e-9
    last_above = max(k for k, v in enumerate(losses) if v > level)  # losses[k]: before update k + 1
    assert done.metrics["epochs_to_optimum"] == last_above + 1


def test_round_off_below_the_optimum_is_no_excess():
    from gradlab.engine import History
    from gradlab.training import LOG_FLOOR, _final_metrics

    m = _final_metrics(History(["epoch", "train_loss"]), 1.7199999, None, 1.72)
    assert m["excess_loss"] == 0.0 and m["at_optimum"] == 1.0 and m["log10_excess_loss"] == math.log10(LOG_FLOOR)


def test_progress_lines_on_a_terminal_and_silence_otherwise(monkeypatch, capsys):
    from gradlab import progress

    clock = iter(range(0, 1000, 2))  # each call: two seconds later
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    shown = progress.Progress(10, ["train_loss", "val_loss"], enabled=True)
    for epoch in (1, 5, 10):
        shown(epoch, [0], [[1.5, 2.5]])
    shown.close()
    err = capsys.readouterr().err
    assert "epoch 10/10 (100%)  train_loss 1.5  val_loss 2.5" in err
    quiet = progress.Progress(10, ["train_loss"], enabled=None)  # None: only if stderr is a terminal
    quiet(1, [0], [[1.0]])
    quiet.close()
    assert capsys.readouterr().err == ""  # pytest's stderr is not a terminal


def test_metric_history_goes_in_batches_not_one_call_per_step():
    from gradlab.tracking.stream import FLUSH_VALUES as BATCH_METRICS
    from gradlab.tracking.stream import MetricStream

    calls = []
    columns = ["epoch", "train_loss", "val_loss", "grad_norm"]
    stream = MetricStream(lambda points: calls.append(points[7]), [7], columns, expected_rows=5000, max_points=1000)
    for epoch in range(1, 5001):
        stream(epoch, [0], [[1.0 / epoch, 2.0 / epoch, 0.5]])
    stream.close()
    points = [p for batch in calls for p in batch]
    assert len(calls) <= 6 and all(len(batch) <= BATCH_METRICS + 3 * 64 for batch in calls)
    for key in ("train_loss", "val_loss", "grad_norm"):
        steps = [s for k, _, s in points if k == key]
        assert len(steps) <= 1000 and steps[0] == 1 and steps[-1] == 5000 and steps == sorted(steps)


def test_a_dead_recorder_is_noticed_within_seconds_while_the_thinning_keeps_no_point(monkeypatch):
    """A run of 1e8 epochs keeps a point every 1e5 epochs: the trainer sent nothing, so noticed its
    recorder's death, only that rarely (minutes on a loaded machine)."""
    from gradlab.tracking import stream as streams

    clock = [0.0]
    monkeypatch.setattr(streams.time, "monotonic", lambda: clock[0])
    checks, sent = [], []
    stream = streams.MetricStream(sent.append, [1], ["epoch", "train_loss"], expected_rows=10**8, max_points=1000,
                                  check=lambda: checks.append(clock[0]))
    for epoch in range(1, 1001):  # one clock second an epoch; the first epoch's point is sent
        clock[0] += 1.0
        stream(epoch, [0], [[1.0]])
    assert len(sent) == 1 and len(checks) >= 1000 // 64 - 1  # checked as often as the clock is read
    assert max(b - a for a, b in zip(checks, checks[1:])) <= 64


@pytest.mark.parametrize("cuda,mps,dtype,expected", [
    (True, True, "float32", "cuda"), (False, True, "float32", "mps"), (False, False, "float32", "cpu"),
    (False, True, "float64", "cpu"),  # MPS has no float64: auto falls back to the CPU
])
def test_auto_device_picks_the_best_that_works(monkeypatch, cuda, mps, dtype, expected):
    from gradlab.options import DType

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    from gradlab.devices import DEVICES

    assert DEVICES["auto"](DType(dtype)) == expected


def test_stop_loss_between_logged_epochs_still_records_the_last_step():
    _, r = train("experiment=thermometer_handgrad_scaled", "train.stop_loss=3.0", "train.log_every=100")
    h = r.history
    assert h.outcome == "reached_stop_loss" and h.epochs_run % 100 != 0
    assert h.column("epoch")[-1] == h.epochs_run and h.column("train_loss")[-1] <= 3.0
    assert h.column("epoch")[:-1] == [1] + list(range(100, h.epochs_run, 100))


def test_maths_and_engine_import_no_hydra_omegaconf_or_mlflow():
    import subprocess
    import sys

    code = ("import sys, gradlab.engine, gradlab.gradients, gradlab.optim, gradlab.data, gradlab.models, gradlab.problem; "
            "print(sorted(m for m in ('hydra', 'omegaconf', 'mlflow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_landscape_from_sufficient_statistics_equals_the_residuals_summed():
    from gradlab.options import Loss
    from gradlab.training import _landscape

    rng = np.random.default_rng(0)
    features = np.stack([rng.normal(size=500), np.ones(500)], 1)
    y = 3 * features[:, 0] - 1 + rng.normal(size=500)
    thetas = rng.normal(size=(2, 7)) * 4
    err = features @ thetas - y[:, None]  # the direct way: every residual at every grid point
    for loss, expected in ((Loss.mse, (err ** 2).mean(0)), (Loss.half_sse, 0.5 * (err ** 2).sum(0))):
        np.testing.assert_allclose(_landscape(features, y, thetas, loss), expected, rtol=1e-10)


def test_figures_of_a_long_run_are_drawn_from_a_bounded_number_of_points():
    from gradlab.training import PLOT_POINTS, plot_data

    s, r = train("experiment=thermometer_handgrad_scaled", "train.epochs=20000")
    d = plot_data(s, 0, r, "t")
    epochs = d["loss"]["epoch"]
    assert len(epochs) <= PLOT_POINTS and epochs[0] == 1 and epochs[-1] == 20000
    rows = {e: v for e, v in zip(r.history.column("epoch"), r.history.column("train_loss"))}
    assert list(d["loss"]["train_loss"]) == [rows[int(e)] for e in epochs]  # the values at those epochs
    assert len(d["trajectory"]["path"]) <= PLOT_POINTS + 1  # and the final point


def test_a_scatter_of_many_samples_shows_a_sample_and_says_so(tmp_path):
    from gradlab.training import SCATTER_POINTS, plot_data

    rng = np.random.default_rng(1)
    x = rng.uniform(0, 10, 20000)
    path = tmp_path / "big.csv"
    path.write_text("x,y\n" + "".join(f"{a},{2 * a + 1 + rng.normal()}\n" for a in x))
    s, r = train("data=csv", f"data.path={path}", "data.target=y", "data.inputs=[x]", "train.epochs=5", "model=linear")
    fit = plot_data(s, 0, r, "t")["fit"]
    assert len(fit["x_train"]) == SCATTER_POINTS and set(fit["x_train"]) <= set(s.prepared[0].raw_train[:, 0].tolist())
    assert "5,000 of its 20,000 samples shown" in fit["title"]


def test_a_long_history_spills_to_disk_and_reads_back_whole(monkeypatch):
    import gc

    from gradlab import spill
    from gradlab.engine import History
    from gradlab.tracking.artifacts import history_csv

    monkeypatch.setattr(spill, "SPILL_ROWS", 7)
    rows = [(k, [1.0 / k, k * 0.5]) for k in range(1, 31)]  # the reference: a plain list
    h = History(["epoch", "train_loss", "grad_norm"])
    for epoch, row in rows:
        h.append(epoch, row)
    folder = h._spill.folder
    assert h._spill.rows == 28 and len(h) == 30 and len(list(folder.iterdir())) == 3
    assert h.column("train_loss") == [r[1][0] for r in rows] and h.column("epoch") == list(range(1, 31))
    assert h.array("grad_norm").tolist() == [r[1][1] for r in rows]
    assert h.at("train_loss", np.array([0, 6, 7, 29])).tolist() == [1.0, 1 / 7, 1 / 8, 1 / 30]
    assert h.last("grad_norm") == 15.0 and h.min("train_loss") == 1 / 30
    assert [r["epoch"] for r in h.records()] == list(range(1, 31))
    table = h.table()
    text = "".join(history_csv(table, rows_per_part=4))
    expected = "epoch,train_loss,grad_norm\n" + "".join(f"{e},{a!r},{b!r}\n" for e, (a, b) in rows)
    assert text == expected
    assert not os.path.exists(table["spilled"]["folder"])  # the writer deletes what was handed over
    assert folder.exists()  # the history keeps its own
    del h, table
    gc.collect()
    assert not folder.exists()  # and removes it with itself
