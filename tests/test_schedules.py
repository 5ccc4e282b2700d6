"""Learning-rate schedules against torch.optim.lr_scheduler driving torch.optim in a plain loop of
the test's own, epoch by epoch: each epoch's learning rate and parameters, in float64. Then a
batch that mixes schedule values (and kinds of phase) equals each of its configurations alone."""

from __future__ import annotations

import copy
import dataclasses
import warnings

import numpy as np
import pytest
import torch

from conftest import compose
from gradlab import training
from gradlab.multirun import launch
from gradlab.config import AnnealStrategy, ThresholdMode, validate
from gradlab.record import Job

EPOCHS = 40
BASE = ["train.dtype=float64", f"train.epochs={EPOCHS}", "model.start.w=1", "model.start.b=0", "tracking.plots=none"]

SCHEDULES = {  # every option, with values that reach each of its branches within EPOCHS
    "constant": [],
    "step": ["schedule.step_size=7", "schedule.gamma=0.5"],
    "multistep": ["schedule.milestones=[3,10,25]", "schedule.gamma=0.3"],
    "exponential": ["schedule.gamma=0.93"],
    "cosine": ["schedule.T_max=12", "schedule.eta_min=0.001"],  # past T_max: back up, and down again
    "cosine_restarts": ["schedule.T_0=4", "schedule.T_mult=2", "schedule.eta_min=0.0005"],
    "linear": ["schedule.start_factor=0.2", "schedule.end_factor=0.6", "schedule.total_iters=15"],
    "warmup_cosine": ["schedule.warmup_epochs=6", "schedule.start_factor=0.1", "schedule.eta_min=0.0001"],
    "onecycle": ["schedule.max_lr=0.02", "schedule.pct_start=0.25"],
    "plateau": ["schedule.patience=2", "schedule.factor=0.5", "schedule.threshold=0.02", "schedule.cooldown=1"],
}
OPTIMIZER = ["optimizer=sgd_momentum", "optimizer.lr=0.01"]

CASES = [(name, [f"schedule={name}", *values], OPTIMIZER) for name, values in SCHEDULES.items()]
CASES += [
    ("cosine T_max=epochs", ["schedule=cosine"], OPTIMIZER),
    ("onecycle linear three_phase", ["schedule=onecycle", "schedule.max_lr=0.05", "schedule.anneal_strategy=linear",
                                     "schedule.three_phase=true", "schedule.div_factor=10"], OPTIMIZER),
    ("plateau on the training loss, abs", ["schedule=plateau", "schedule.patience=1", "schedule.threshold_mode=abs",
                                           "schedule.threshold=0.05", "schedule.min_lr=0.004", "data.val_fraction=null"],
     ["optimizer=adam", "optimizer.lr=0.2"]),
]
# Every optimizer under a schedule: those that work values out of lr (AdamW's decay factor,
# Adagrad's decayed lr, ASGD's eta, Rprop's first step sizes) must follow it as torch's do.
OPTIMIZERS = {
    "gd": ["optimizer.lr=0.01"], "sgd": ["optimizer.lr=0.01", "optimizer.weight_decay=0.01"],
    "adam": ["optimizer.lr=0.1"], "adamw": ["optimizer.lr=0.1", "optimizer.weight_decay=0.3"],
    "rmsprop": ["optimizer.lr=0.01", "optimizer.momentum=0.5"], "adagrad": ["optimizer.lr=0.5", "optimizer.lr_decay=0.05"],
    "asgd": ["optimizer.lr=0.01", "optimizer.lambd=0.01", "optimizer.t0=5"], "adadelta": ["optimizer.lr=2.0"],
    "adamax": ["optimizer.lr=0.1"], "nadam": ["optimizer.lr=0.1", "optimizer.weight_decay=0.1", "optimizer.decoupled_weight_decay=true"],
    "radam": ["optimizer.lr=0.1", "optimizer.weight_decay=0.1"], "rprop": ["optimizer.lr=0.02"],
    "lbfgs": ["optimizer.lr=0.5", "optimizer.max_iter=3"],
}
CASES += [(f"{name} under exponential", ["schedule=exponential", "schedule.gamma=0.9"], [f"optimizer={name}", *values])
          for name, values in OPTIMIZERS.items()]
CASES += [("lbfgs under warmup_cosine", ["schedule=warmup_cosine", "schedule.warmup_epochs=3"],
           ["optimizer=lbfgs", "optimizer.lr=0.5", "optimizer.max_iter=3"])]


def ours(cfg):
    """gradlab's run: each epoch's lr and parameters (w, b) at its start, the final ones, and
    the data and start it trained from (for the reference loop)."""
    s = training.setup(cfg)
    start = {k: float(v.detach().reshape(-1)[0]) for k, v in s.params.items()}
    histories = training.new_histories(s)
    final = training.fit(s, histories)[0]
    h = histories[0]
    lrs = h.array("lr") if "lr" in h.columns else np.full(len(h), cfg.optimizer.lr)
    params = np.stack([h.array("param.w"), h.array("param.b")], 1)
    return lrs, np.vstack([params, [[float(final["w"].ravel()[0]), float(final["b"].ravel()[0])]]]), s.prepared[0], start


def torch_scheduler(opt, s, epochs: int):
    """torch.optim.lr_scheduler's scheduler for a schedule config, as a user would write it."""
    L = torch.optim.lr_scheduler
    if s.name == "constant":
        return None
    if s.name == "step":
        return L.StepLR(opt, step_size=s.step_size, gamma=s.gamma)
    if s.name == "multistep":
        return L.MultiStepLR(opt, milestones=list(s.milestones), gamma=s.gamma)
    if s.name == "exponential":
        return L.ExponentialLR(opt, gamma=s.gamma)
    if s.name == "cosine":
        return L.CosineAnnealingLR(opt, T_max=s.T_max or epochs, eta_min=s.eta_min)
    if s.name == "cosine_restarts":
        return L.CosineAnnealingWarmRestarts(opt, T_0=s.T_0, T_mult=s.T_mult, eta_min=s.eta_min)
    if s.name == "linear":
        return L.LinearLR(opt, start_factor=s.start_factor, end_factor=s.end_factor, total_iters=s.total_iters)
    if s.name == "warmup_cosine":
        warm = L.LinearLR(opt, start_factor=s.start_factor, end_factor=1.0, total_iters=s.warmup_epochs)
        cos = L.CosineAnnealingLR(opt, T_max=epochs - s.warmup_epochs, eta_min=s.eta_min)
        return L.SequentialLR(opt, [warm, cos], milestones=[s.warmup_epochs])
    if s.name == "onecycle":
        return L.OneCycleLR(opt, max_lr=s.max_lr, total_steps=epochs, pct_start=s.pct_start,
                            anneal_strategy=s.anneal_strategy.value, cycle_momentum=False, div_factor=s.div_factor,
                            final_div_factor=s.final_div_factor, three_phase=s.three_phase)
    if s.name == "plateau":
        return L.ReduceLROnPlateau(opt, mode="min", factor=s.factor, patience=s.patience, threshold=s.threshold,
                                   threshold_mode=s.threshold_mode.value, cooldown=s.cooldown, min_lr=s.min_lr, eps=s.eps)
    raise AssertionError(s.name)


def theirs(cfg, prepared, start):
    """The same problem in a plain loop: w·x + b, mean squared error, torch.optim's optimizer and
    torch's scheduler stepped after each epoch (on the validation loss, else the epoch's loss)."""
    x, y = prepared.x_train[:, 0], prepared.y_train
    w = torch.tensor(start["w"], dtype=torch.float64, requires_grad=True)
    b = torch.tensor(start["b"], dtype=torch.float64, requires_grad=True)
    o = cfg.optimizer
    kwargs = {f.name: getattr(o, f.name) for f in dataclasses.fields(o) if f.name != "name"}
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
    opt = (torch.optim.SGD if o.name == "gd" else getattr(torch.optim, {
        "sgd": "SGD", "adam": "Adam", "adamw": "AdamW", "rmsprop": "RMSprop", "adagrad": "Adagrad", "asgd": "ASGD",
        "adadelta": "Adadelta", "adamax": "Adamax", "nadam": "NAdam", "radam": "RAdam", "rprop": "Rprop", "lbfgs": "LBFGS",
    }[o.name]))([w, b], **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SequentialLR's and OneCycleLR's notes on how they are stepped
        sched = torch_scheduler(opt, cfg.schedule, cfg.train.epochs)
    lrs, params = [], []

    def closure():
        opt.zero_grad()
        loss = ((x * w + b - y) ** 2).mean()
        loss.backward()
        return loss

    for _ in range(cfg.train.epochs):
        lrs.append(float(opt.param_groups[0]["lr"]))
        params.append([w.item(), b.item()])
        if o.name == "lbfgs":
            loss = opt.step(closure)
        else:
            loss = closure()
            opt.step()
        if sched is None:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if cfg.schedule.name == "plateau":
                if prepared.x_val is not None:
                    with torch.no_grad():
                        loss = ((prepared.x_val[:, 0] * w + b - prepared.y_val) ** 2).mean()
                sched.step(loss.item())
            else:
                sched.step()
    params.append([w.item(), b.item()])
    return np.array(lrs), np.array(params)


def relative(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    scale = np.maximum(np.maximum(np.abs(a), np.abs(b)), 1e-300)
    return float(np.max(np.abs(a - b) / scale))


@pytest.mark.parametrize("name,schedule,optimizer", CASES, ids=[c[0] for c in CASES])
def test_schedule_follows_torch_lr_scheduler_epoch_by_epoch(name, schedule, optimizer):
    cfg = compose(*BASE, *optimizer, *schedule)
    validate(cfg)
    lrs, params, prepared, start = ours(cfg)
    ref_lrs, ref_params = theirs(cfg, prepared, start)
    assert len(lrs) == EPOCHS and len(params) == len(ref_params)
    assert relative(lrs, ref_lrs) <= 1e-12, f"lr: ours {lrs}, torch's {ref_lrs}"
    assert relative(params, ref_params) <= 1e-12
    if cfg.schedule.name != "constant":
        assert len(set(lrs.tolist())) > 1  # it moved
    if cfg.schedule.name == "plateau":
        assert lrs[-1] < lrs[0]  # it reduced


def test_constant_records_no_lr_and_builds_nothing():
    s = training.setup(compose(*BASE))
    assert s.schedule.lr_schedule is None and "lr" not in training.new_histories(s)[0].columns


# ------------------------------------------------------------------------ batched
def alone_and_batched(cfgs):
    for c in cfgs:
        validate(c)
    assert len(launch.groups([Job(c) for c in cfgs], 1024)) == 1  # one program
    s = training.setup(*cfgs)
    batched = training.new_histories(s)
    finals = training.fit(s, batched)
    for c, h, final in zip(cfgs, batched, finals):
        a = training.setup(c)
        alone = training.new_histories(a)
        final_alone = training.fit(a, alone)[0]
        assert (h.outcome, h.epochs_run, h.stop_step) == (alone[0].outcome, alone[0].epochs_run, alone[0].stop_step)
        for column in h.columns:
            np.testing.assert_array_equal(h.array(column), alone[0].array(column), err_msg=column)
        for k in final:
            np.testing.assert_array_equal(final[k], final_alone[k])
    return batched


def variant(cfg, **values):
    """A copy of a composed config with some values set (`optimizer__lr=0.1`): composing each
    costs more than training it here."""
    out = copy.deepcopy(cfg)
    for key, value in values.items():
        *path, last = key.split("__")
        node = out
        for part in path:
            node = getattr(node, part)
        setattr(node, last, value)
    return out


BATCHES = {  # per schedule, the values of each configuration of one batch
    "step": [dict(schedule__step_size=5, schedule__gamma=0.5, optimizer__lr=0.05),
             dict(schedule__step_size=9, schedule__gamma=0.2, optimizer__lr=0.02)],
    "multistep": [dict(schedule__milestones=[3, 10]), dict(schedule__milestones=[5, 6, 30], schedule__gamma=0.7)],
    "exponential": [dict(schedule__gamma=0.9), dict(schedule__gamma=0.97, optimizer__lr=0.02)],
    "cosine": [dict(schedule__T_max=10), dict(schedule__T_max=25, schedule__eta_min=0.002), {}],
    "cosine_restarts": [dict(schedule__T_0=3), dict(schedule__T_0=5, schedule__T_mult=2)],
    "linear": [{}, dict(schedule__start_factor=0.5, schedule__end_factor=0.1, schedule__total_iters=20)],
    # at epoch 5 one is past its warm-up and another still in it: the phases mix in one step
    "warmup_cosine": [dict(schedule__warmup_epochs=3), dict(schedule__warmup_epochs=12, schedule__start_factor=0.05),
                      dict(schedule__warmup_epochs=7, optimizer__lr=0.03)],
    "onecycle": [dict(schedule__max_lr=0.05), dict(schedule__max_lr=0.1, schedule__pct_start=0.5),
                 dict(schedule__max_lr=0.02, schedule__anneal_strategy=AnnealStrategy.linear, schedule__three_phase=True)],
    "plateau": [dict(schedule__patience=1), dict(schedule__patience=4, schedule__factor=0.3, schedule__threshold_mode=ThresholdMode.abs),
                dict(schedule__cooldown=3, schedule__threshold=0.05, optimizer__lr=0.02)],
}


@pytest.mark.parametrize("name", sorted(BATCHES))
def test_a_batch_mixing_schedule_values_equals_each_configuration_alone(name):
    """Bit for bit: each configuration's lr, losses and parameters, epoch by epoch."""
    optimizer = "adamw" if name in ("cosine", "plateau", "onecycle") else "sgd_momentum"  # AdamW: lr-derived decay
    base = compose(*BASE, f"optimizer={optimizer}", f"schedule={name}", *SCHEDULES[name])
    alone_and_batched([variant(base, **values) for values in BATCHES[name]])


def test_configurations_that_leave_a_scheduled_batch_take_their_schedule_with_them():
    """One diverges, one converges at its stop_loss: the others' schedules go on as alone."""
    base = compose(*BASE, "train.epochs=60", "schedule=plateau", "schedule.patience=1")
    cfgs = [variant(base, optimizer__lr=lr, train__stop_loss=stop, schedule__patience=patience)
            for lr, stop, patience in ((0.01, None, 1), (1e6, None, 100), (0.008, 24.2, 1), (0.005, None, 1))]
    cfgs.append(variant(base, optimizer__lr=0.004, schedule__patience=3))
    histories = alone_and_batched(cfgs)
    assert [h.outcome for h in histories] == ["completed", "diverged", "reached_stop_loss", "completed", "completed"]


def test_schedule_values_batch_and_schedule_kinds_do_not():
    def key(*overrides):
        return launch.batch_key(compose("train.epochs=10", *overrides), 0)

    assert key("schedule=step", "schedule.step_size=3") == key("schedule=step", "schedule.step_size=5", "schedule.gamma=0.5")
    assert key("schedule=warmup_cosine", "schedule.warmup_epochs=2") == key("schedule=warmup_cosine", "schedule.warmup_epochs=4")
    assert key("schedule=step", "schedule.step_size=3") != key("schedule=exponential", "schedule.gamma=0.5")
    assert key("schedule=cosine") != key()



# ------------------------------------------------------------------------ recorded
def test_a_scheduled_run_records_its_lr_and_its_schedule(temp_store):
    """The lr is a step metric thinned like the others (history.csv has every epoch), the
    schedule's keys are params, its name is in the run's name, and compare's frame has it."""
    import mlflow

    from gradlab import compare
    from gradlab.record import Origin, record
    from gradlab.tracking import Store, query

    cfg = compose("train.epochs=500", "schedule=step", "schedule.step_size=100", "schedule.gamma=0.5", "tracking.max_points=50",
                  "tracking.plots=none")
    record(Job(cfg, ["schedule=step"]), Origin("sched"), quiet=True)
    client = mlflow.MlflowClient(temp_store)
    (step,) = client.search_runs([client.get_experiment_by_name("sched").experiment_id])
    assert step.info.run_name == "step · thermometer-x0.1-linear-autograd-sgd-lr0.01-step"
    assert {k: v for k, v in step.data.params.items() if k.startswith("schedule.")} == {
        "schedule.name": "step", "schedule.step_size": "100", "schedule.gamma": "0.5"}
    points = {m.step: m.value for m in client.get_metric_history(step.info.run_id, "lr")}
    assert 2 < len(points) <= 50 and min(points) == 1 and max(points) == 500  # thinned, first and last kept
    assert all(v == 0.01 * 0.5 ** ((s - 1) // 100) for s, v in points.items())  # epoch s's updates used it
    mlflow.set_tracking_uri(temp_store)  # load_text reads the global URI, which another test may have set
    history = mlflow.artifacts.load_text(f"runs:/{step.info.run_id}/history.csv").splitlines()
    assert history[0].split(",")[4] == "lr" and len(history) == 501
    records = query.experiment_runs(Store(), query.experiment_id(Store(), "sched"))
    assert compare.tidy(records)["schedule"].tolist() == ["step"] and "schedule" in compare.AXES
    before = dataclasses.replace(records[0], params={k: v for k, v in records[0].params.items() if not k.startswith("schedule.")})
    assert compare.tidy([before])["schedule"].tolist() == ["constant"]  # a run recorded before schedules


def test_the_loss_figure_draws_the_lr_on_a_second_axis_where_it_changes():
    from gradlab import plots

    base = {"epoch": np.arange(1, 5), "train_loss": np.array([4.0, 3.0, 2.0, 1.0]), "val_loss": None, "optimal_loss": None,
            "stop_step": None, "loss_name": "mse", "title": "t"}
    moving = plots.loss_curves({**base, "lr": np.array([0.1, 0.1, 0.01, 0.01])})
    assert len(moving.axes) == 2 and moving.axes[1].get_ylabel() == "learning rate"
    assert "learning rate" in [t.get_text() for t in moving.axes[0].get_legend().get_texts()]
    assert len(plots.loss_curves({**base, "lr": np.full(4, 0.1)}).axes) == 1  # it does not change: no axis
    assert len(plots.loss_curves({**base, "lr": None}).axes) == 1


def test_the_schedule_is_in_the_runs_name_and_title_where_it_is_not_constant():
    from gradlab.describe import run_name, title

    assert run_name(compose()) == "thermometer-x0.1-linear-autograd-sgd-lr0.01" and "schedule" not in title(compose())
    cosine = compose("schedule=cosine")
    assert run_name(cosine) == "thermometer-x0.1-linear-autograd-sgd-lr0.01-cosine" and "sgd lr=0.01, cosine schedule" in title(cosine)
    onecycle = compose("schedule=onecycle", "schedule.max_lr=0.2")  # it sets the lr itself: its max_lr, not optimizer.lr
    assert run_name(onecycle) == "thermometer-x0.1-linear-autograd-sgd-max_lr0.2-onecycle"
    assert "sgd max_lr=0.2, onecycle schedule" in title(onecycle)
