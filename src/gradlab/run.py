"""One run, from a typed config to results: build the objects, fit, evaluate. No Hydra, no MLflow.

`setup` turns a validated `Config` into the problem, parameters, gradient method and optimizer;
`evaluate` computes the final metrics and the data the plots need. `train` does both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from gradlab import data as data_mod
from gradlab import devices, engine, gradients, models, optim
from gradlab.config import Config, ConfigError
from gradlab.devices import Backend
from gradlab.engine import History, Schedule
from gradlab.problem import Problem

STREAM_EVAL_SAMPLES = 1024  # a fixed draw on which a streamed run's final loss is measured


@dataclass
class Setup:
    cfg: Config
    backend: Backend
    dataset: data_mod.Dataset | data_mod.Stream | None
    prepared: data_mod.Prepared | None
    model: models.Model
    problem: Problem
    params: dict  # on the backend; trained in place
    grad_fn: object
    optimizer: object
    schedule: Schedule
    eval_batch: tuple | None = None  # streamed data: fixed draw for the final loss

    @property
    def n_params(self) -> int:
        return sum(int(np.prod(p.shape)) for p in self.params.values())


def _check_pairing(cfg: Config, backend: Backend, model_cls: type, dataset) -> None:
    """What the objects say about each other: a model without data, a method NumPy cannot run."""
    if model_cls.objective and dataset is not None:
        raise ConfigError("data", cfg.data.name, f"model={cfg.model.name} is a function of its parameters: use data=none")
    if not model_cls.objective and dataset is None:
        objectives = "|".join(sorted(n for n, c in models.MODELS.items() if c.objective))
        raise ConfigError("model", cfg.model.name, f"data={cfg.data.name} has no samples: pick a dataset, or model={objectives}")
    if backend.numpy:
        if not (gradients.METHODS[cfg.grad.name].on_numpy and optim.OPTIMIZERS[cfg.optimizer.name].on_numpy):
            raise ConfigError(
                "device", "numpy", f"runs grad=analytic with optimizer=gd only (got grad={cfg.grad.name}, "
                f"optimizer={cfg.optimizer.name}); use device=cpu for other pairings",
            )
        if model_cls.torch_module:
            raise ConfigError("device", "numpy", f"model={cfg.model.name} is a torch.nn.Module; use device=cpu")


def _parameters(model: models.Model, init: dict, backend: Backend, needs_graph: bool) -> dict:
    """The initial values on the backend: the module's own parameters, or plain tensors/arrays."""
    if backend.numpy:
        return {k: backend.put(v) for k, v in init.items()}
    if model.module is not None:
        model.module.to(device=backend.device, dtype=getattr(torch, backend.dtype.value))
        params = dict(model.module.named_parameters())
        with torch.no_grad():
            for k, p in params.items():
                p.copy_(init[k])
        return params
    return {k: backend.put(v).requires_grad_(needs_graph) for k, v in init.items()}


def setup(cfg: Config) -> Setup:
    t = cfg.train
    backend = devices.backend(cfg.device.name, t.dtype)
    dataset = data_mod.load(cfg.data)
    _check_pairing(cfg, backend, models.MODELS[cfg.model.name], dataset)
    prepared = data_mod.prepare(dataset, cfg.data) if isinstance(dataset, data_mod.Dataset) else None
    n_inputs = prepared.x_train.shape[1] if prepared else (1 if dataset is not None else 0)
    model = models.build(cfg.model, n_inputs)

    gen = torch.Generator().manual_seed(t.seed)  # init first, then shuffles / streamed batches
    params = _parameters(model, model.init(gen, cfg.model), backend, gradients.METHODS[cfg.grad.name].needs_graph)
    problem = Problem(model, t.loss, backend, prepared if prepared else dataset, t.batch_size, t.shuffle, gen)
    eval_batch = None
    if isinstance(dataset, data_mod.Stream):
        x, y = dataset.sample(STREAM_EVAL_SAMPLES, torch.Generator().manual_seed(t.seed + 1))
        eval_batch = (backend.put(x), backend.put(y))
    grad_fn = gradients.build(cfg.grad, problem, params)
    optimizer = optim.build(cfg.optimizer, list(params.values()))
    schedule = Schedule(t.epochs, t.log_every, t.stop_loss)
    return Setup(cfg, backend, dataset, prepared, model, problem, params, grad_fn, optimizer, schedule, eval_batch)


def new_history(s: Setup) -> History:
    return History(engine.columns(s.problem, s.params))


def fit(s: Setup, history: History, on_log=None) -> History:
    """Train the set-up problem in place, filling `history`."""
    return engine.fit(s.problem, s.params, s.grad_fn, s.optimizer, s.schedule, history, on_log)


@dataclass
class Result:
    history: History
    metrics: dict[str, float]  # final metrics; non-finite values are left out
    params: dict[str, list]  # final parameters, by name, as nested lists
    optimum: dict[str, list] | None  # closed-form optimum, where there is one
    objective: float  # what a sweeper minimises: final val loss, else final train loss; inf if diverged


def _loss(s: Setup, batch) -> float:
    with torch.no_grad():
        return float(s.problem.loss(s.params, batch))


def _as_list(v):
    return np.asarray(v.detach().cpu() if isinstance(v, torch.Tensor) else v, dtype=np.float64).tolist()


def evaluate(s: Setup, history: History) -> Result:
    """Final metrics with the final parameters, on the full sets; the optimum where known."""
    train_batch = s.eval_batch if s.eval_batch is not None else s.problem.train
    metrics = {"final_train_loss": _loss(s, train_batch), "epochs_run": float(history.epochs_run),
               "train_seconds": history.seconds}
    if s.problem.val is not None:
        metrics["final_val_loss"] = _loss(s, s.problem.val)
        vals = history.column("val_loss") + [metrics["final_val_loss"]]
        metrics["best_val_loss"] = min(v for v in vals if math.isfinite(v)) if any(map(math.isfinite, vals)) else math.nan

    optimum, optimal_loss = None, None
    if s.model.objective:
        opt_params, optimal_loss = s.model.optimum()
        optimum = {k: [float(v)] if not isinstance(v, list) else v for k, v in opt_params.items()}
    elif train_batch is not None:
        x, y = (torch.as_tensor(np.asarray(a), dtype=torch.float64) if s.backend.numpy else a.detach().double().cpu() for a in train_batch)
        theta = models.least_squares(s.model, x, y)
        if theta is not None:
            optimum = {k: _as_list(v) for k, v in theta.items()}
            optimal_loss = float(models.squared_error(_predict_flat(s.model, theta, x) - y, *models.REDUCTIONS[s.cfg.train.loss]))
    if optimal_loss is not None:
        metrics["optimal_train_loss"] = optimal_loss
        metrics["excess_loss"] = metrics["final_train_loss"] - optimal_loss

    metrics = {k: float(v) for k, v in metrics.items() if math.isfinite(v)}
    params = {k: _as_list(v) for k, v in s.params.items()}
    return Result(history, metrics, params, optimum, objective(metrics, history.outcome))


def objective(metrics: dict, outcome: str) -> float:
    """What a sweeper minimises: the final validation loss, else the final training loss; +inf
    for a run that diverged (a result, but the worst one)."""
    if outcome == "diverged":
        return math.inf
    return metrics.get("final_val_loss", metrics.get("final_train_loss", math.inf))


def _predict_flat(model: models.Model, theta: dict, x: torch.Tensor) -> torch.Tensor:
    """Predictions of a linear-in-parameters model from its design matrix and θ (float64)."""
    return model.features(x) @ torch.cat([v.reshape(-1) for v in theta.values()])


def train(cfg: Config) -> tuple[Setup, Result]:
    """Build and fit a validated config; no tracking."""
    s = setup(cfg)
    return s, evaluate(s, fit(s, new_history(s)))


# ------------------------------------------------------------------------- plot data
GRID = 60  # contour resolution per axis


def _numpy_params(s: Setup, values: dict) -> dict:
    """Parameters by name as float64 arrays of the model's shapes (an objective's optimum stores a
    scalar as [x])."""
    return {k: np.asarray(v, dtype=np.float64).reshape(s.model.shapes[k]) for k, v in values.items()}


def _flat(values: dict) -> list[float]:
    return np.concatenate([np.ravel(np.asarray(v, dtype=np.float64)) for v in values.values()]).tolist()


def span(values, pad: float = 0.15) -> tuple[float, float]:
    """A padded range around values (never empty)."""
    lo, hi = float(np.min(values)), float(np.max(values))
    width = hi - lo if hi > lo else max(abs(hi), 1.0)
    return lo - pad * width, hi + pad * width


def plot_data(s: Setup, result: Result, title: str) -> dict:
    """Plain arrays for `plots.figures` (drawn in the recorder process): which figures apply."""
    h, cfg = result.history, s.cfg
    kind = cfg.train.loss
    loss_name = "objective" if s.model.objective else kind.value
    diverged = h.outcome == "diverged"
    out = {"loss": {
        "epoch": h.column("epoch"), "train_loss": h.column("train_loss"),
        "val_loss": h.column("val_loss") if "val_loss" in h.columns else None,
        "optimal_loss": result.metrics.get("optimal_train_loss"), "stop_step": h.stop_step,
        "loss_name": loss_name, "title": title, "stream": isinstance(s.dataset, data_mod.Stream),
    }}
    final = _numpy_params(s, result.params)
    optimum = _numpy_params(s, result.optimum) if result.optimum else None
    pr = s.prepared
    if pr is not None and not diverged:  # a diverged model has no curve worth drawing
        ds = pr.dataset

        def features(raw):
            return pr.features(torch.as_tensor(raw, dtype=torch.float64)).numpy()

        def label(column: str) -> str:
            return f"{column} ({ds.units[column]})" if column in ds.units else column

        if pr.raw_train.shape[1] == 1:
            raws = [pr.raw_train] + ([pr.raw_val] if pr.raw_val is not None else [])
            lo, hi = span(torch.cat(raws).numpy(), 0.05)
            grid = np.linspace(lo, hi, 200)[:, None]
            out["fit"] = {
                "x_train": pr.raw_train[:, 0].numpy(), "y_train": pr.y_train.numpy(),
                "x_val": pr.raw_val[:, 0].numpy() if pr.raw_val is not None else None,
                "y_val": pr.y_val.numpy() if pr.y_val is not None else None,
                "grid_x": grid[:, 0], "grid_y": s.model.forward(final, features(grid)),
                "grid_opt": s.model.forward(optimum, features(grid)) if optimum else None,
                "x_label": label(ds.inputs[0]), "y_label": label(ds.target), "title": title,
            }
        if isinstance(s.model, models.MLP) or pr.raw_train.shape[1] > 1:
            out["predicted"] = {
                "y_train": pr.y_train.numpy(), "pred_train": s.model.forward(final, features(pr.raw_train)),
                "y_val": pr.y_val.numpy() if pr.y_val is not None else None,
                "pred_val": s.model.forward(final, features(pr.raw_val)) if pr.raw_val is not None else None,
                "y_label": label(ds.target), "title": title,
            }

    names = [c[len("param."):] for c in h.columns if c.startswith("param.")]
    if len(names) == 2 and len(h):
        path = np.array([h.column("param." + n) for n in names]).T
        if diverged:  # the last steps dwarf everything: show the path while the loss is within 100× its start
            losses = h.column("train_loss")
            shown = max(3, next((i for i, v in enumerate(losses) if v > 100 * losses[0]), len(losses)))
            path = path[:shown]
            title += f"\ndiverged: the path is shown for its first {len(path)} steps"
        else:
            path = np.vstack([path, [_flat(final)]])
        opt = _flat(optimum) if optimum else None
        pts = np.vstack([path, [opt]]) if opt else path
        (a0, a1), (b0, b1) = span(pts[:, 0]), span(pts[:, 1])
        A, B = np.meshgrid(np.linspace(a0, a1, GRID), np.linspace(b0, b1, GRID))
        thetas = np.stack([A.ravel(), B.ravel()])  # (2, G²)
        if s.model.objective:
            z = s.model.value(dict(zip(s.model.shapes, thetas)))
        else:
            x, y = (s.eval_batch if s.eval_batch is not None else s.problem.train)
            x, y = (np.asarray(v.detach().cpu() if isinstance(v, torch.Tensor) else v, dtype=np.float64) for v in (x, y))
            err = s.model.features(torch.as_tensor(x)).numpy() @ thetas - y[:, None]  # (n, G²)
            mean, factor = models.REDUCTIONS[kind]
            z = factor * ((err * err).mean(0) if mean else (err * err).sum(0))
        out["trajectory"] = {"grid_a": A, "grid_b": B, "grid_loss": np.asarray(z).reshape(A.shape), "path": path,
                             "optimum": opt, "names": names, "loss_name": loss_name, "title": title}
    return out
