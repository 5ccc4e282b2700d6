"""A user's own code through model.target: an objective f(θ) and an nn.Module written into the
test's own folder (nothing shipped), trained batched and alone, against a plain torch loop over
the same code; every bad target refused in one line with nothing recorded; a rerun of a run that
names code refused without --trust-code.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import compose
from gradlab import training

FUNCTIONS = '''
import torch


def beale(t):
    x, y = t[0], t[1]
    return (1.5 - x + x * y) ** 2 + (2.25 - x + x * y ** 2) ** 2 + (2.625 - x + x * y ** 3) ** 2


def branchy(t):
    """Python control flow on a value: vmap cannot run it, the loop over configurations can."""
    if t[0].item() > 0:
        return (t ** 2).sum()
    return 2 * (t ** 2).sum()


def bowl(t):
    return ((t - 1) ** 2).sum()


def doubled(t):
    return 2 * t


def log_of_x(t):
    return torch.log(t[0]) + t[1] ** 2


def as_float(t):
    return float((t ** 2).sum())


def mean_abs(pred, target):
    return (pred - target).abs().mean()


def per_sample(pred, target):
    return (pred - target).abs()


VALUE = 3
'''

MODULES = '''
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, d=2, hidden=4):
        super().__init__()
        self.l1 = nn.Linear(d, hidden)
        self.l2 = nn.Linear(hidden, 1)

    def forward(self, x):
        return self.l2(torch.tanh(self.l1(x)))


class Line(nn.Module):
    """Two scalars: a trajectory over the loss contour."""

    def __init__(self):
        super().__init__()
        self.a = nn.Parameter(torch.tensor(0.5))
        self.b = nn.Parameter(torch.tensor(-0.5))

    def forward(self, x):
        return x[:, 0] * self.a + self.b


class Needs(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.l = nn.Linear(2, width)

    def forward(self, x):
        return self.l(x)


class Empty(nn.Module):
    def forward(self, x):
        return x[:, :1]


def not_a_module():
    return 3
'''


@pytest.fixture
def code(tmp_path):
    """The test's own functions and modules, and a CSV of 30 rows of two inputs."""
    (tmp_path / "fns.py").write_text(FUNCTIONS)
    (tmp_path / "nets.py").write_text(MODULES)
    (tmp_path / "broken.py").write_text("import no_such_module_for_gradlab\n")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 2))
    y = np.tanh(x[:, 0] - 2 * x[:, 1])
    (tmp_path / "d.csv").write_text("a,b,y\n" + "".join(f"{float(u)!r},{float(v)!r},{float(w)!r}\n" for (u, v), w in zip(x, y)))
    return tmp_path


def _finals(*cfgs) -> list[dict]:
    """Each configuration's final parameters, trained as one batch (no tracking)."""
    s = training.setup(*cfgs)
    h = training.new_histories(s)
    return [r.params for r in training.evaluate(s, h, training.fit(s, h))]


def _deviation(a: dict, b: dict) -> float:
    """The largest relative difference between two sets of parameters by name."""
    assert a.keys() == b.keys()
    return max(float(np.max(np.abs(np.subtract(a[k], b[k])) / np.maximum(1e-300, np.abs(b[k])))) for k in a)


# ---------------------------------------------------------------------------- objective
def _objective(code, name: str, start, lr: float, *extra: str):
    return compose("model=objective", "data=none", f"model.target={code}/fns.py:{name}", f"model.start={start}",
                   "optimizer=gd", f"optimizer.lr={lr}", "train.epochs=200", "train.dtype=float64", *extra)


def _gd_loop(fn, start, lr: float, epochs: int) -> list[float]:
    theta = torch.tensor(start, dtype=torch.float64, requires_grad=True)
    for _ in range(epochs):
        fn(theta).backward()
        with torch.no_grad():
            theta -= lr * theta.grad
        theta.grad = None
    return theta.detach().tolist()


@pytest.mark.parametrize("name,grad", [("beale", "autograd"), ("branchy", "autograd"), ("beale", "finite_difference")])
def test_an_objective_batched_and_alone_equals_a_plain_gd_loop(code, name, grad):
    import importlib.util

    spec = importlib.util.spec_from_file_location("fns_reference", code / "fns.py")
    fns = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fns)
    settings = [([1.0, 1.0], 0.01), ([-1.0, 0.5], 0.005), ([2.0, 0.2], 0.02)]
    cfgs = [_objective(code, name, f"[{a},{b}]", lr, f"grad={grad}") for (a, b), lr in settings]
    batched = _finals(*cfgs)
    alone = [_finals(c)[0] for c in cfgs]
    worst = 0.0
    for (start, lr), b, a in zip(settings, batched, alone):
        assert b.keys() == {"x", "y"}
        worst = max(worst, _deviation(b, a))
        if grad == "autograd":
            x, y = _gd_loop(getattr(fns, name), start, lr, 200)
            worst = max(worst, _deviation(a, {"x": x, "y": y}))
    print(f"largest relative deviation ({name}, {grad}): {worst:.3g}")
    assert worst <= 1e-9


def test_an_objective_uses_vmap_where_it_can_and_a_loop_where_it_cannot(code):
    from gradlab import models

    for name, mode in (("beale", "vmap"), ("branchy", "loop")):
        s = training.setup(_objective(code, name, "[1,1]", 0.01))
        s.problem.loss(s.params, None)
        assert isinstance(s.model, models.UserObjective) and s.model.batched.mode == mode


def test_an_objective_with_its_optimum_is_judged_against_it_and_draws_its_path(code):
    cfg = _objective(code, "bowl", "[3,-2]", 0.1, "model.optimum=[1,1]")
    s, result = training.train(cfg)
    assert result.optimum == {"x": [1.0], "y": [1.0]}
    assert result.metrics["optimal_train_loss"] == 0.0 and result.metrics["excess_loss"] < 1e-9
    assert result.metrics["at_optimum"] == 1.0 and 0 < result.metrics["epochs_to_optimum"] < 200
    figures = training.plot_data(s, 0, result, "bowl")
    assert figures["trajectory"]["optimum"] == [1.0, 1.0] and figures["trajectory"]["grid_loss"].shape == (60, 60)
    assert "fit" not in figures


def test_an_objective_names_its_entries(code):
    s, result = training.train(_objective(code, "beale", "[1,1]", 0.01, "model.names=[u,v]", "train.epochs=3"))
    assert list(result.params) == ["u", "v"] and "param.u" in result.history.columns
    assert "excess_loss" not in result.metrics  # no optimum given


def test_a_relative_path_is_relative_to_the_working_directory(code, monkeypatch):
    monkeypatch.chdir(code)
    cfg = compose("model=objective", "data=none", "model.target=fns.py:beale", "model.start=[1,1]", "train.epochs=3")
    assert training.train(cfg)[1].history.epochs_run == 3


# ------------------------------------------------------------------------------- module
def _module(code, target: str, *extra: str):
    return compose("model=module", f"model.target={code}/nets.py:{target}", "data=csv", f"data.path={code}/d.csv",
                   "train.dtype=float64", "train.epochs=150", *extra)


def _adam_loop(code, seed: int, lr: float, epochs: int, hidden: int, loss) -> dict:
    """The user's own script: torch.manual_seed, their module, torch.optim.Adam, their loss."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("nets_reference", code / "nets.py")
    nets = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(nets)
    data = np.loadtxt(code / "d.csv", delimiter=",", skiprows=1)
    x, y = torch.tensor(data[:, :2]), torch.tensor(data[:, 2:])
    torch.manual_seed(seed)
    net = nets.Net(hidden=hidden).double()
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    for _ in range(epochs):
        opt.zero_grad()
        loss(net(x), y).backward()
        opt.step()
    return {k: v.detach().tolist() for k, v in net.named_parameters()}


@pytest.mark.parametrize("loss", ["mse", "l1", "huber", "module"])
def test_a_module_batched_and_alone_equals_a_plain_adam_loop(code, loss):
    import torch.nn.functional as F

    reference_loss = {"mse": F.mse_loss, "l1": F.l1_loss, "huber": lambda p, y: F.huber_loss(p, y, delta=0.5),
                      "module": lambda p, y: (p - y).abs().mean()}[loss]
    settings = [(0, 0.01), (1, 0.01), (0, 0.03), (2, 0.003)]
    cfgs = [_module(code, "Net", "+model.args.hidden=5", "optimizer=adam", f"optimizer.lr={lr}", f"train.seed={seed}",
                    f"train.loss={loss}", "train.huber_delta=0.5",
                    *([f"train.loss_target={code}/fns.py:mean_abs"] if loss == "module" else [])) for seed, lr in settings]
    batched = _finals(*cfgs)
    alone = [_finals(c)[0] for c in cfgs]
    worst = 0.0
    for (seed, lr), b, a in zip(settings, batched, alone):
        assert list(b) == ["l1.weight", "l1.bias", "l2.weight", "l2.bias"]
        worst = max(worst, _deviation(b, a), _deviation(a, _adam_loop(code, seed, lr, 150, 5, reference_loss)))
    print(f"largest relative deviation (module, {loss}): {worst:.3g}")
    assert worst <= 1e-9


def test_a_module_starts_where_model_start_says_and_draws_its_fit_and_path(code):
    cfg = _module(code, "Line", "+model.start.b=2", "optimizer=adam", "optimizer.lr=0.05", "data.inputs=[a]",
                  "train.epochs=5")
    s = training.setup(cfg)
    assert s.params["a"].tolist() == [0.5] and s.params["b"].tolist() == [2.0]
    s, result = training.train(cfg)
    figures = training.plot_data(s, 0, result, "line")
    assert {"fit", "trajectory"} <= set(figures)
    assert np.isfinite(figures["trajectory"]["grid_loss"]).all()


def test_bce_is_torchs(code):
    import torch.nn.functional as F

    from gradlab.losses import sample_loss
    from gradlab.options import Loss

    pred, y = torch.rand(3, 7, 1, dtype=torch.float64), (torch.rand(3, 7, 1) > 0.5).double()
    expected = torch.stack([F.binary_cross_entropy(pred[i], y[i]) for i in range(3)])
    assert torch.allclose(sample_loss(Loss.bce, pred, y, 1.0), expected, rtol=1e-15, atol=0)


# ------------------------------------------------------------------------- bad targets
BAD = [
    (["model=objective", "data=none", "model.target=fns.py", "model.start=[1,1]"], ["package.module:Name"]),
    (["model=objective", "data=none", "model.target=nofile.py:f", "model.start=[1,1]"], ["no such file nofile.py"]),
    (["model=objective", "data=none", "model.target=no_such_pkg_for_gradlab.mod:f", "model.start=[1,1]"],
     ["cannot import no_such_pkg_for_gradlab.mod", "ModuleNotFoundError: No module named 'no_such_pkg_for_gradlab'"]),
    (["model=objective", "data=none", "model.target=broken.py:f", "model.start=[1,1]"],
     ["importing broken.py failed", "No module named 'no_such_module_for_gradlab'"]),
    (["model=objective", "data=none", "model.target=fns.py:nothere", "model.start=[1,1]"],
     ["fns.py has no 'nothere'", "beale"]),
    (["model=objective", "data=none", "model.target=fns.py:VALUE", "model.start=[1,1]"], ["is a int, not a function"]),
    (["model=objective", "data=none", "model.target=fns.py:doubled", "model.start=[1,1]"], ["returned shape (2,)", "not a scalar"]),
    (["model=objective", "data=none", "model.target=fns.py:log_of_x", "model.start=[0,1]"], ["is -inf at model.start=[0, 1]"]),
    (["model=objective", "data=none", "model.target=fns.py:as_float", "model.start=[1,1]"], ["returned a float", "not a tensor"]),
    (["model=objective", "data=none", "model.target=fns.py:beale"], ["model.start=None", "needs its starting point"]),
    (["model=objective", "data=none"], ["model.target=None", "needs your code"]),
    (["model=objective", "data=none", "model.target=fns.py:beale", "model.start=[1,1]", "grad=analytic"],
     ["grad='analytic'", "no hand-derived gradient"]),
    (["model=module", "model.target=nets.py:not_a_module", "data=csv", "data.path=d.csv"], ["made a int, not a torch.nn.Module"]),
    (["model=module", "model.target=nets.py:Empty", "data=csv", "data.path=d.csv"], ["has no parameters"]),
    (["model=module", "model.target=nets.py:Needs", "data=csv", "data.path=d.csv"],
     ["cannot be made with model.args={}", "missing 1 required positional argument: 'width'"]),
    (["model=module", "model.target=nets.py:Needs", "+model.args.width=2", "data=csv", "data.path=d.csv"],
     ["maps inputs of shape (30, 2) to (30, 2)", "(30, 1) or (30,)"]),
    (["model=module", "model.target=nets.py:Net", "+model.args.d=3", "data=csv", "data.path=d.csv"],
     ["raised RuntimeError", "on inputs of shape (30, 2)"]),
]


LOSS = ["model=module", "model.target=nets.py:Net", "data=csv", "data.path=d.csv"]
BAD += [
    ([*LOSS, "train.loss=module"], ["train.loss_target=None", "needs your loss(pred, target)"]),
    ([*LOSS, "train.loss=mse", "train.loss_target=fns.py:mean_abs"], ["read with train.loss=module only"]),
    ([*LOSS, "train.loss=module", "train.loss_target=fns.py:beale"],
     ["raised TypeError", "takes 1 positional argument but 2 were given", "shape (30, 1)"]),
    ([*LOSS, "train.loss=module", "train.loss_target=fns.py:per_sample"], ["returned shape (30, 1)", "not a scalar"]),
    ([*LOSS, "train.loss=module", "train.loss_target=fns.py:VALUE"], ["is a int, not a function loss(pred, target)"]),
    ([*LOSS, "train.loss=module", "train.loss_target=nothere.py:f"], ["no such file nothere.py"]),
]


@pytest.mark.parametrize("args,words", BAD, ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_a_bad_target_is_refused_in_one_line_and_records_nothing(cli, runs, code, monkeypatch, args, words):
    monkeypatch.chdir(code)
    got, out, err = cli(*args, "train.epochs=2")
    assert got == 2, err
    key = ("grad" if "grad=analytic" in args else "model.start" if "needs its starting point" in words[-1] else
           "train.loss_target" if any(a.startswith("train.loss=") for a in args) else "model.target")
    assert err.startswith(f"gradlab: error: {key}="), err
    for w in words:
        assert w in err
    assert "Traceback" not in err and err.count("\n") == 1
    assert runs() == []


def test_the_python_api_raises_the_same_error(code, monkeypatch):
    import gradlab
    from gradlab.options import ConfigError

    monkeypatch.chdir(code)
    with pytest.raises(ConfigError, match=r"^model.target='fns.py:doubled' is not allowed: returned shape \(2,\)"):
        gradlab.run("model=objective", "data=none", "model.target=fns.py:doubled", "model.start=[1,1]")


def test_a_target_module_is_imported_afresh_when_its_file_changes(tmp_path):
    from gradlab import targets

    (tmp_path / "f.py").write_text("def f(t):\n    return t.sum()\n")
    first = targets.resolve("model.target", f"{tmp_path}/f.py:f")
    (tmp_path / "f.py").write_text("def f(t):\n    return 2 * t.sum()\n")
    second = targets.resolve("model.target", f"{tmp_path}/f.py:f")
    assert first.sha256 != second.sha256 and float(second.obj(torch.ones(2))) == 4.0
    assert second.source == textwrap.dedent("def f(t):\n    return 2 * t.sum()\n")


# -------------------------------------------------------------------------------- trust
def test_a_run_records_its_code_and_a_rerun_imports_it_only_when_trusted(code, temp_store, runs, monkeypatch, capsys):
    import hashlib
    import sys

    import mlflow

    from gradlab import cli
    from gradlab.record import Job, Origin, record

    cfg = _objective(code, "beale", "[1,1]", 0.01, "train.epochs=5")
    first = record(Job(cfg), Origin("own"), quiet=True)
    client = mlflow.MlflowClient(temp_store)
    tags = client.get_run(first.run_id).data.tags
    source = (code / "fns.py").read_bytes()
    assert tags["gradlab.target.sha256"] == hashlib.sha256(source).hexdigest()
    assert tags["gradlab.target.path"] == str(code / "fns.py")
    (code / "got").mkdir()
    assert Path(client.download_artifacts(first.run_id, "target/fns.py", str(code / "got"))).read_bytes() == source

    def rerun(*flags):
        monkeypatch.setattr(sys, "argv", ["gradlab", "rerun", first.run_id, *flags])
        with pytest.raises(SystemExit) as e:
            cli.main()
        return e.value.code, capsys.readouterr().err

    code_, err = rerun()
    assert code_ == 2 and err.count("\n") == 1 and "model.target=" in err and "--trust-code" in err
    assert len(runs("own")) == 1
    (code / "fns.py").write_text(FUNCTIONS + "\n# edited\n")
    code_, err = rerun("--trust-code")
    assert code_ == 0 and "has changed since run" in err
    again = [r for r in runs("own") if r.info.run_id != first.run_id]
    assert len(again) == 1 and again[0].data.tags["gradlab.rerun_of"] == first.run_id
    assert again[0].data.tags["gradlab.target.sha256"] != tags["gradlab.target.sha256"]


# ----------------------------------------------------------------------------- examples
@pytest.mark.parametrize("recipe", ["booth_gd", "himmelblau_gd", "ill_conditioned_gd", "saddle_adam"])
def test_the_test_function_recipes_reach_their_minimum(recipe):
    """The shipped examples/test_functions.py through the recipes, as a user runs them (from the
    project root, where conftest runs the suite)."""
    _, result = training.train(compose(f"experiment={recipe}"))
    assert result.metrics["at_optimum"] == 1.0, result.metrics


def test_the_tiny_net_example_is_a_module_and_a_factory():
    cfg = compose("experiment=tiny_net_teacher", "train.epochs=3")
    s, result = training.train(cfg)
    assert list(result.params) == ["hidden.weight", "hidden.bias", "out.weight", "out.bias"]
    factory = compose("model=module", "data=teacher", "train.epochs=3", "model.target=examples/tiny_net.py:tiny_net",
                      "+model.args.width=16")
    assert training.train(factory)[1].params.keys() == result.params.keys()


# ------------------------------------------------------------------------------ Python API
def test_the_python_api_takes_the_code_itself(code, monkeypatch):
    import importlib

    import gradlab
    from gradlab.options import ConfigError

    monkeypatch.syspath_prepend(str(code))
    nets, fns = importlib.import_module("nets"), importlib.import_module("fns")
    r = gradlab.run(model=nets.Line, data="csv", data__path=str(code / "d.csv"), data__inputs=["a"], train__epochs=3)
    assert r.config.model.target == "nets:Line" and list(r.params) == ["a", "b"]
    r = gradlab.run(model=fns.bowl, data="none", model__start=[3, -2], train__epochs=3)
    assert r.config.model.target == "fns:bowl" and r.config.model.name == "objective"

    def local(t):
        return t.sum()

    with pytest.raises(ConfigError, match="inside a function"):
        gradlab.run(model=local, data="none", model__start=[1])


def test_a_users_loss_is_recorded_and_its_rerun_needs_trust_too(code, temp_store, monkeypatch, capsys):
    import hashlib
    import sys

    import mlflow

    from gradlab import cli
    from gradlab.record import Job, Origin, record

    cfg = _module(code, "Net", "train.loss=module", f"train.loss_target={code}/fns.py:mean_abs", "train.epochs=3")
    first = record(Job(cfg), Origin("own"), quiet=True)
    tags = mlflow.MlflowClient(temp_store).get_run(first.run_id).data.tags
    assert tags["gradlab.loss_target.sha256"] == hashlib.sha256((code / "fns.py").read_bytes()).hexdigest()
    assert tags["gradlab.target.sha256"] == hashlib.sha256((code / "nets.py").read_bytes()).hexdigest()
    monkeypatch.setattr(sys, "argv", ["gradlab", "rerun", first.run_id])
    with pytest.raises(SystemExit) as e:
        cli.main()
    err = capsys.readouterr().err
    assert e.value.code == 2 and "model.target=" in err and "train.loss_target=" in err and err.count("\n") == 1


def test_a_sweep_draws_the_optimizers_racing_on_each_function(cli, temp_store, code):
    import mlflow

    got, out, err = cli("-m", "hydra/launcher=batched", "model=objective", "data=none", f"model.target={code}/fns.py:bowl",
                        "model.start=[3,-2]", "model.optimum=[1,1]", "optimizer=gd,sgd_momentum,adam",
                        "optimizer.lr=0.01,0.1", "train.epochs=60", "tracking.plots=none", "train.dtype=float64")
    assert got == 0, err
    client = mlflow.MlflowClient(temp_store)
    (parent,) = [r for r in client.search_runs([client.get_experiment_by_name("default").experiment_id])
                 if r.data.tags.get("gradlab.role") == "sweep"]
    assert [a.path for a in client.list_artifacts(parent.info.run_id, "race")] == ["race/bowl.png"]


def test_the_race_takes_each_optimizers_best_run(code):
    from gradlab.multirun import race
    from gradlab.ranking import entry
    from gradlab.tracking.query import RunRecord

    def child(run_id, optimizer, lr, excess, momentum=0.0):
        params = {"model.name": "objective", "model.target": f"{code}/fns.py:bowl", "model.optimum": [1.0, 1.0],
                  "optimizer.name": optimizer, "optimizer.lr": lr, "optimizer.momentum": momentum, "train.epochs": 10}
        metrics = {"param.x": 1.0, "param.y": 1.0, "final_train_loss": excess, "optimal_train_loss": 0.0,
                   "excess_loss": excess, "at_optimum": float(excess < 1e-9)}
        return RunRecord(run_id, run_id, "0", "FINISHED", 0, params, metrics, {"gradlab.outcome": "completed"})

    children = [child("a", "gd", 0.1, 0.5), child("b", "gd", 0.01, 0.0), child("c", "sgd", 0.1, 0.2, 0.9)]
    entries = [entry(c.id, c.name, c.outcome, c.params, c.metrics) for c in children]
    asked = []

    def ask(query, run_id, key):
        asked.append(run_id)
        return [(1, 3.0), (2, 2.0), (3, 1.0)] if key == "param.x" else [(1, -2.0), (2, 0.0), (3, 1.0)]

    (drawn,) = race.data("s", children, entries, ask).values()
    assert [p["label"] for p in drawn["paths"]] == ["gd lr=0.01", "sgd m0.9 lr=0.1"] and sorted(set(asked)) == ["b", "c"]
    assert drawn["paths"][0]["path"].tolist() == [[3.0, -2.0], [2.0, 0.0], [1.0, 1.0]] and drawn["optimum"] == [1.0, 1.0]
    assert drawn["grid_loss"].shape == (race.GRID, race.GRID) and drawn["names"] == ["x", "y"]
