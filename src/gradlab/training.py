"""Runs, from typed configs to results: build the objects, fit, evaluate. No Hydra, no MLflow.

`setup(*cfgs)` turns validated configs that differ only in values (learning rates, scalings,
seeds, ...) into one batched problem, its parameters, gradient method and optimizer; a single run
is a batch of one. `evaluate` computes each configuration's final metrics, `plot_data` what its
figures need. `train` does it all for one config.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from gradlab import data as data_mod
from gradlab import devices, engine, gradients, losses, models, optim, schedules, usermodels
from gradlab.config import Config, ConfigError, Loss
from gradlab.devices import Backend
from gradlab.engine import History, Schedule
from gradlab.problem import Problem
from gradlab.ranking import optimum_tolerance

STREAM_EVAL_SAMPLES = 1024  # a fixed draw on which a streamed run's final loss is measured


@dataclass
class Setup:
    cfgs: list[Config]
    backend: Backend
    prepared: list[data_mod.Prepared | None]  # per configuration (None: a stream, or no data)
    stream: data_mod.Stream | None
    model: models.Model
    problem: Problem
    params: dict  # (B, *layout) on the backend; trained in place
    grad_fn: object
    optimizer: object
    schedule: Schedule
    eval_draws: list[tuple] | None = None  # streamed data: a fixed draw per configuration (float64 CPU)
    eval_batch: tuple | None = None  # the same draws on the backend, for the final loss

    @property
    def code(self) -> dict:
        """The user's code this batch runs, by the key that names it (model.target, train.loss_target)."""
        found = {"model.target": getattr(self.model, "target", None), "train.loss_target": getattr(self.problem.sample.user, "target", None)}
        return {k: t for k, t in found.items() if t is not None}

    @property
    def n_params(self) -> int:
        return sum(math.prod(shape) for shape in self.model.shapes.values())


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


# Values a parameter is held in while it trains: itself, its gradient, an optimizer's state (two
# for Adam's kind), the last update; and the activations of a forward and a backward pass.
PARAM_COPIES, ACTIVATION_COPIES = 6, 4


def _fits_in_memory(cfgs: list[Config], model: models.Model, n_samples: int) -> None:
    """Refuse a model this machine cannot train, before its parameters are drawn: the batch's
    parameters and their state, and its activations over the training samples (finite
    differences evaluate 2P+1 parameter sets at once)."""
    from gradlab.config import fits_in_memory

    cfg = cfgs[0]
    n_params = sum(math.prod(shape) for shape in model.shapes.values())
    finite_differences = cfg.grad.name == "finite_difference"

    def values(params: int, width: int) -> int:
        sets = 2 * params + 1 if finite_differences else 1
        return len(cfgs) * (params * PARAM_COPIES + sets * (params + n_samples * width * ACTIVATION_COPIES))

    hidden = getattr(cfg.model, "hidden", None)
    if hidden is not None and hidden > 0:  # the parameters grow with the hidden layer: P(h) = P / hidden * h
        per_unit = n_params / hidden
        fits_in_memory("model.hidden", hidden, lambda h: values(math.ceil(per_unit * h), h), "use a smaller hidden layer",
                       copies=1)
    else:
        fits_in_memory("model", cfg.model.name, lambda _: values(n_params, model.width),
                       "use fewer input columns or samples", copies=1)


def _holds(p: data_mod.Prepared, cfg: Config) -> None:
    """The scaled inputs and the targets must be finite in train.dtype: a factor or a cell that
    makes them overflow is refused by name, not met as a NaN deep in a solver."""
    dtype = cfg.train.dtype.value
    top = float(np.finfo(dtype).max)
    for what, t in (("inputs", p.x_train), ("inputs", p.x_val), ("targets", p.y_train), ("targets", p.y_val)):
        if t is None or not len(t):
            continue
        largest = float(t.abs().max())
        if largest <= top:
            continue
        beyond = f"makes the largest of the {what} {largest:.3g}, beyond what train.dtype={dtype} holds ({top:.3g})"
        if what == "inputs" and cfg.data.scaling.value == "factor":
            raise ConfigError("data.scale_factor", cfg.data.scale_factor, f"{beyond}; pick a smaller factor")
        if what == "inputs" and cfg.data.scaling.value != "none":
            raise ConfigError("data.scaling", cfg.data.scaling.value, f"{beyond}; pick another scaling")
        key, value = ("data.path", cfg.data.path) if cfg.data.name == "csv" else ("data", cfg.data.name)
        raise ConfigError(key, value, f"{beyond}; use train.dtype=float64, or rescale the data")


def _stacked(prepared: list, field: str):
    """One field of every configuration's prepared data, stacked on a leading axis."""
    parts = [getattr(p, field) for p in prepared]
    if any(t is None for t in parts):
        return None
    shapes = {tuple(t.shape) for t in parts}
    if len(shapes) > 1:
        raise ValueError(f"these configurations cannot share a batch: their {field} have shapes {sorted(shapes)}")
    return torch.stack(parts)


def setup(*cfgs: Config) -> Setup:
    """The batched problem of configs that differ only in values (one config: a batch of one)."""
    cfg, t = cfgs[0], cfgs[0].train
    backend = devices.backend(cfg.device.name, t.dtype)
    datasets = [data_mod.load(c.data) for c in cfgs]
    _check_pairing(cfg, backend, models.MODELS[cfg.model.name], datasets[0])
    stream = datasets[0] if isinstance(datasets[0], data_mod.Stream) else None
    prepared = [data_mod.prepare(d, c.data) if isinstance(d, data_mod.Dataset) else None for d, c in zip(datasets, cfgs)]
    n_inputs = prepared[0].x_train.shape[1] if prepared[0] else (1 if stream is not None else 0)
    model = models.build(cfg.model, n_inputs)
    _fits_in_memory(cfgs, model, len(prepared[0].y_train) if prepared[0] else (t.batch_size or 1))
    for p, c in zip(prepared, cfgs):
        if p is not None:
            _holds(p, c)

    gens = [torch.Generator().manual_seed(c.train.seed) for c in cfgs]  # init first, then shuffles / streamed batches
    inits = [model.init(g, c.model, c.train.seed) for g, c in zip(gens, cfgs)]
    needs_graph = gradients.METHODS[cfg.grad.name].needs_graph
    params = {k: backend.put(torch.stack([i[k].reshape(model.layout[k]) for i in inits])) for k in model.shapes}
    if not backend.numpy:
        params = {k: v.requires_grad_(needs_graph) for k, v in params.items()}
    train = val = None
    if prepared[0] is not None:
        train = (_stacked(prepared, "x_train"), _stacked(prepared, "y_train"))
        if prepared[0].x_val is not None:
            val = (_stacked(prepared, "x_val"), _stacked(prepared, "y_val"))
    user_loss = usermodels.UserLoss(t.loss_target) if t.loss is Loss.module else None
    sample = losses.SampleLoss(t.loss, t.huber_delta, user_loss)
    problem = Problem(model, t.loss, backend, gens, train, val, stream, t.batch_size, t.shuffle, sample)
    if problem.train is not None:  # a user's code is run once before any run exists: it must fit the data
        first = {k: v[:1] for k, v in params.items()}
        model.check(first, problem.train[0][:1])
        if user_loss is not None:
            with torch.no_grad():
                user_loss.check(model.forward(first, problem.train[0][:1])[0], problem.train[1][0])
    draws = eval_batch = None
    if stream is not None:
        draws = [stream.sample(STREAM_EVAL_SAMPLES, torch.Generator().manual_seed(c.train.seed + 1)) for c in cfgs]
        eval_batch = problem._put((torch.stack([x for x, _ in draws]), torch.stack([y for _, y in draws])))
    optimizer = optim.build([c.optimizer for c in cfgs], list(params.values()))
    lr_schedule = schedules.build([c.schedule for c in cfgs], t.epochs, [c.optimizer.lr for c in cfgs])
    schedule = Schedule(t.epochs, t.log_every, [c.train.stop_loss for c in cfgs], lr_schedule)
    return Setup(list(cfgs), backend, prepared, stream, model, problem, params, gradients.build(cfg.grad),
                 optimizer, schedule, draws, eval_batch)


def new_histories(s: Setup) -> list[History]:
    return [History(engine.columns(s.problem, lr=s.schedule.lr_schedule is not None)) for _ in s.cfgs]


def fit(s: Setup, histories: list[History], on_log=None, between_epochs=None) -> list[dict]:
    """Train the set-up batch in place, filling `histories`; each configuration's final parameters."""
    return engine.fit(s.problem, s.params, s.grad_fn, s.optimizer, s.schedule, histories, on_log, between_epochs)


@dataclass
class Result:
    history: History
    metrics: dict[str, float]  # final metrics; non-finite values are left out
    params: dict[str, list]  # final parameters, by name, as nested lists
    optimum: dict[str, list] | None  # closed-form optimum, where there is one


def _as_list(v):
    return np.asarray(v.detach().cpu() if isinstance(v, torch.Tensor) else v, dtype=np.float64).tolist()


def _final_losses(s: Setup, finals: list[dict], data) -> list[float]:
    """Each configuration's loss on `data` with its final parameters."""
    params = {k: s.backend.put(torch.as_tensor(np.stack([f[k] for f in finals]))) for k in s.model.shapes}
    with torch.no_grad(), np.errstate(over="ignore", invalid="ignore"):  # a diverged run's loss may overflow
        return [float(v) for v in s.problem.loss(params, data).tolist()]


def _train_data(s: Setup, i: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Configuration i's training inputs (n, d) and targets (n,), float64 on the CPU (a stream's
    fixed draw)."""
    return s.eval_draws[i] if s.eval_draws is not None else (s.prepared[i].x_train, s.prepared[i].y_train)


def _optimum(s: Setup, i: int) -> tuple[dict | None, float | None]:
    """A configuration's closed-form optimum and its training loss, where the model knows one."""
    if s.model.objective:
        opt_params, optimal_loss = s.model.optimum()
        if opt_params is None:
            return None, None
        return {k: [float(v)] if not isinstance(v, list) else v for k, v in opt_params.items()}, optimal_loss
    if s.cfgs[i].train.loss not in models.REDUCTIONS:  # least squares minimises squared errors only
        return None, None
    x, y = _train_data(s, i)
    theta = models.least_squares(s.model, x, y)
    if theta is None:
        return None, None
    err = s.model.features(x) @ torch.cat([v.reshape(-1) for v in theta.values()]) - y
    mean, factor = models.REDUCTIONS[s.cfgs[i].train.loss]
    optimal = float(models.squared_error(err[None, :, None], mean, factor)[0])
    return {k: _as_list(v) for k, v in theta.items()}, optimal


LOG_FLOOR = 1e-16  # log10 companions of values at or below it read -16 (an excess of exactly 0)


def has_optimum(s: Setup) -> bool:
    """Whether the set-up problem knows its optimum (a closed form, or the objective's own)."""
    return _optimum(s, 0)[1] is not None


def evaluate(s: Setup, histories: list[History], finals: list[dict], threshold: float | None = None) -> list[Result]:
    """Each configuration's final metrics with its final parameters, on its full sets; the
    optimum where known, whether the run is at it and since which epoch. A diverged run gets no
    losses of its exploded parameters: its last recorded (finite) ones and its divergence step
    instead. `threshold`: a training loss whose first epoch at or below it is recorded."""
    train = s.eval_batch if s.eval_batch is not None else s.problem.train
    train_losses = _final_losses(s, finals, train)
    val_losses = _final_losses(s, finals, s.problem.val) if s.problem.val is not None else None
    results = []
    for i, (h, final) in enumerate(zip(histories, finals)):
        optimum, optimal_loss = _optimum(s, i)
        if h.outcome == "diverged":
            metrics = _diverged_metrics(h)
            if optimal_loss is not None:
                metrics["at_optimum"] = 0.0
        else:
            metrics = _final_metrics(h, train_losses[i], None if val_losses is None else val_losses[i], optimal_loss,
                                     s.stream is None)
        metrics.update(epochs_run=float(h.epochs_run), train_seconds=h.seconds)
        if optimal_loss is not None:
            metrics["optimal_train_loss"] = optimal_loss
        if threshold is not None and s.stream is None and len(h):
            reached = h.first_epoch_at_or_below("train_loss", threshold)
            if reached is not None:
                metrics["epochs_to_threshold"] = float(reached - 1)  # row k holds the loss before epoch k's update
        if s.cfgs[i].optimizer.lr > 0:
            metrics["log10_lr"] = math.log10(s.cfgs[i].optimizer.lr)
        metrics = {k: float(v) for k, v in metrics.items() if math.isfinite(v)}
        params = {k: np.asarray(final[k]).reshape(s.model.shapes[k]).tolist() for k in s.model.shapes}
        results.append(Result(h, metrics, params, optimum))
    return results


def _final_metrics(h: History, train_loss: float, val_loss: float | None, optimal_loss: float | None,
                   fixed_data: bool = True) -> dict:
    """The losses of a run's final parameters, their log10 companions (the UI's scatter and
    parallel-coordinates views draw linear axes only), its excess over the optimum, whether it is
    at the optimum, and since which epoch (reached and kept: the rows of a stream's fresh batches
    are too noisy to say)."""
    metrics = {"final_train_loss": train_loss}
    if val_loss is not None:
        metrics["final_val_loss"] = val_loss
        finite = [v for v in (h.min("val_loss") if len(h) else math.nan, val_loss) if math.isfinite(v)]
        metrics["best_val_loss"] = min(finite) if finite else math.nan
    if optimal_loss is not None and math.isfinite(train_loss):
        excess = max(0.0, train_loss - optimal_loss)  # below the optimum only by round-off
        metrics["excess_loss"] = excess
        at_optimum = excess <= optimum_tolerance(optimal_loss)
        metrics["at_optimum"] = float(at_optimum)
        if at_optimum and fixed_data:
            # Row k holds the loss before epoch k's update: the optimum was reached after k - 1
            # epochs; a run that gets there in its last epoch shows it in no row.
            since = h.first_epoch_at_or_below("train_loss", optimal_loss + optimum_tolerance(optimal_loss), stay=True)
            metrics["epochs_to_optimum"] = float(h.epochs_run if since is None else since - 1)
    for k in ("final_train_loss", "final_val_loss", "excess_loss"):
        if k in metrics and math.isfinite(metrics[k]):
            metrics[f"log10_{k}"] = math.log10(max(metrics[k], LOG_FLOOR))
    return metrics


def _diverged_metrics(h: History) -> dict:
    """A diverged run's last recorded losses (all finite: nothing non-finite enters a history)
    and the step at which it diverged."""
    metrics = {"diverged_step": float(h.stop_step)}
    if len(h):
        for name in ("train_loss", "val_loss"):
            if name in h.metrics:
                metrics[f"last_{name}"] = h.last(name)
        if "val_loss" in h.metrics:
            metrics["best_val_loss"] = h.min("val_loss")
    return metrics


def train(cfg: Config) -> tuple[Setup, Result]:
    """Build and fit one validated config; no tracking."""
    s = setup(cfg)
    histories = new_histories(s)
    return s, evaluate(s, histories, fit(s, histories))[0]


# ------------------------------------------------------------------------- plot data
GRID = 60  # contour resolution per axis
PLOT_POINTS = 4000  # a curve or path is drawn from at most this many of its points (a figure is ~1000 px wide)
SCATTER_POINTS = 5000  # a scatter shows at most this many samples (a seeded draw; the title says so)


def thinned(h: History, names: list[str], k: int = PLOT_POINTS) -> dict[str, np.ndarray]:
    """Columns of a history at evenly spaced rows, the first and last always: what a figure of a
    run of millions of epochs needs, in memory that does not grow with them."""
    n = len(h)
    rows = np.unique(np.linspace(0, n - 1, min(n, k)).round().astype(np.int64)) if n else np.zeros(0, np.int64)
    return {name: h.at(name, rows) for name in names}


def _numpy_params(s: Setup, values: dict) -> dict:
    """Parameters by name as float64 arrays in the users' shapes (an objective's optimum stores a
    scalar as [x])."""
    return {k: np.asarray(v, dtype=np.float64).reshape(s.model.shapes[k]) for k, v in values.items()}


def _flat(values: dict) -> list[float]:
    return np.concatenate([np.ravel(np.asarray(v, dtype=np.float64)) for v in values.values()]).tolist()


def span(values, pad: float = 0.15) -> tuple[float, float]:
    """A padded range around values (never empty)."""
    lo, hi = float(np.min(values)), float(np.max(values))
    width = hi - lo if hi > lo else max(abs(hi), 1.0)
    return lo - pad * width, hi + pad * width


def plot_data(s: Setup, i: int, result: Result, title: str) -> dict:
    """Plain arrays for `plots.figures` (drawn in the recorder process): the figures that apply
    to configuration i."""
    h = result.history
    loss_name = "objective" if s.model.objective else s.cfgs[i].train.loss.value
    curves = thinned(h, [c for c in ("epoch", "train_loss", "val_loss", "lr") if c in h.columns])
    out = {"loss": {
        "epoch": curves["epoch"], "train_loss": curves["train_loss"], "val_loss": curves.get("val_loss"), "lr": curves.get("lr"),
        "optimal_loss": result.metrics.get("optimal_train_loss"), "stop_step": h.stop_step, "outcome": h.outcome,
        "loss_name": loss_name, "title": title, "stream": s.stream is not None,
    }}
    final = _numpy_params(s, result.params)
    optimum = _numpy_params(s, result.optimum) if result.optimum else None
    if s.prepared[i] is not None and h.outcome != "diverged":  # a diverged model has no curve worth drawing
        out.update(_data_figures(s.model, s.prepared[i], final, optimum, title))
    names = [c[len("param."):] for c in h.columns if c.startswith("param.")]
    if len(names) == 2 and len(h):
        out["trajectory"] = _trajectory(s, i, h, names, final, optimum, loss_name, title)
    return out


def _data_figures(model: models.Model, pr: data_mod.Prepared, final: dict, optimum: dict | None, title: str) -> dict:
    """The fit on the original input units (one input), predicted against true (several, or an MLP)."""
    ds, out = pr.dataset, {}

    def features(raw):
        return pr.features(torch.as_tensor(raw, dtype=torch.float64)).numpy()

    def label(column: str) -> str:
        return f"{column} ({ds.units[column]})" if column in ds.units else column

    train, val = _shown(pr.raw_train), _shown(pr.raw_val)
    n = len(pr.raw_train) + (0 if pr.raw_val is None else len(pr.raw_val))
    if len(train) + len(val) < n:
        title += f"\n{len(train) + len(val):,} of its {n:,} samples shown"
    x_train, y_train = pr.raw_train[train], pr.y_train[train]
    x_val, y_val = (pr.raw_val[val], pr.y_val[val]) if pr.raw_val is not None else (None, None)
    if pr.raw_train.shape[1] == 1:
        raws = [pr.raw_train] + ([pr.raw_val] if pr.raw_val is not None else [])
        lo, hi = span(torch.cat(raws).numpy(), 0.05)
        grid = np.linspace(lo, hi, 200)[:, None]
        out["fit"] = {
            "x_train": x_train[:, 0].numpy(), "y_train": y_train.numpy(),
            "x_val": x_val[:, 0].numpy() if x_val is not None else None,
            "y_val": y_val.numpy() if y_val is not None else None,
            "grid_x": grid[:, 0], "grid_y": model.predict(final, features(grid)),
            "grid_opt": model.predict(optimum, features(grid)) if optimum else None,
            "x_label": label(ds.inputs[0]), "y_label": label(ds.target), "title": title,
        }
    if isinstance(model, models.MLP) or pr.raw_train.shape[1] > 1:
        out["predicted"] = {
            "y_train": y_train.numpy(), "pred_train": model.predict(final, features(x_train)),
            "y_val": y_val.numpy() if y_val is not None else None,
            "pred_val": model.predict(final, features(x_val)) if x_val is not None else None,
            "y_label": label(ds.target), "title": title,
        }
    return out


def _shown(x) -> torch.Tensor:
    """Which samples a scatter draws: all of them, or a seeded draw of SCATTER_POINTS."""
    if x is None:
        return torch.arange(0)
    if len(x) <= SCATTER_POINTS:
        return torch.arange(len(x))
    return torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[:SCATTER_POINTS].sort().values


def _landscape(features: np.ndarray, y: np.ndarray, thetas: np.ndarray, loss) -> np.ndarray:
    """The loss of a model linear in its parameters at each column of `thetas`, from its
    sufficient statistics: Σ(Fθ − y)² = θᵀ(FᵀF)θ − 2θᵀFᵀy + yᵀy, so the cost and the memory do
    not grow with the rows (an n × G² grid of residuals took 6 GB for 10⁵ rows)."""
    gram, fy, yy = features.T @ features, features.T @ y, float(y @ y)
    sse = np.einsum("jg,jk,kg->g", thetas, gram, thetas) - 2 * fy @ thetas + yy
    mean, factor = models.REDUCTIONS[loss]
    return factor * np.maximum(sse, 0.0) / (len(y) if mean else 1)


GRID_VALUES = 2_000_000  # predictions a landscape computes at once (a chunk of the grid times the rows)


def _loss_grid(s: Setup, i: int, thetas: np.ndarray) -> np.ndarray:
    """The training loss of configuration i's data at each column of `thetas` (its two scalar
    parameters), by the model's own forward pass, a chunk of the grid at a time: for models not
    linear in their parameters, or losses other than squared errors."""
    x, y = _train_data(s, i)
    cfg = s.cfgs[i].train
    chunk = max(1, GRID_VALUES // max(1, len(y)))
    out = []
    with torch.no_grad():
        for lo in range(0, thetas.shape[1], chunk):
            part = torch.as_tensor(thetas[:, lo:lo + chunk], dtype=torch.float64)
            k = part.shape[1]
            p = {n: part[j].reshape(k, *s.model.layout[n]) for j, n in enumerate(s.model.shapes)}
            pred = s.model.forward(p, x[None].expand(k, *x.shape))
            target = y[None, :, None].expand(k, len(y), 1)
            if cfg.loss in models.REDUCTIONS:
                out.append(models.squared_error(pred - target, *models.REDUCTIONS[cfg.loss]))
            else:
                out.append(s.problem.sample.value(pred, target))
    return torch.cat(out).numpy()


def _trajectory(s: Setup, i: int, h: History, names: list[str], final: dict, optimum: dict | None,
                loss_name: str, title: str) -> dict:
    """Loss contours over the plane of the two parameters, and the path the optimizer took."""
    rows = thinned(h, ["train_loss", *("param." + n for n in names)])
    path = np.stack([rows["param." + n] for n in names], 1)
    if h.outcome == "diverged":  # the last steps dwarf everything: show the path while the loss is within 100× its start
        losses = rows["train_loss"]
        path = path[:max(3, next((k for k, v in enumerate(losses) if v > 100 * losses[0]), len(losses)))]
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
    elif s.model.features(torch.zeros(1, s.model.n_inputs)) is None or s.cfgs[i].train.loss not in models.REDUCTIONS:
        z = _loss_grid(s, i, thetas)
    else:
        x, y = _train_data(s, i)
        z = _landscape(s.model.features(x).numpy(), y.numpy(), thetas, s.cfgs[i].train.loss)
    return {"grid_a": A, "grid_b": B, "grid_loss": np.asarray(z).reshape(A.shape), "path": path,
            "optimum": opt, "names": names, "loss_name": loss_name, "title": title}
