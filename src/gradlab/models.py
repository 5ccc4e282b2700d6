"""Models and objectives: prediction, the hand-derived gradient, the closed-form optimum.

The formulas use only operations that torch tensors and NumPy arrays share (`@`, `*`, `.sum`,
`.T`, indexing), so the same hand-derived gradient runs on either; `device=numpy` depends on it.

A model maps inputs x of shape (n, d) to predictions of shape (n,). `backward(p, x, g)` returns
Σᵢ gᵢ·∂f(xᵢ)/∂θ for every parameter: the chain rule's last step, given g = ∂loss/∂prediction.
An objective (Rosenbrock, the bowl) is a function of its parameters alone.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from gradlab.options import Activation, ConfigError, Init, Loss  # noqa: F401 - Loss keys REDUCTIONS

# ---------------------------------------------------------------------------- losses
REDUCTIONS = {  # name: (mean over samples?, factor)
    Loss.mse: (True, 1.0),
    Loss.sse: (False, 1.0),
    Loss.half_mse: (True, 0.5),
    Loss.half_sse: (False, 0.5),
}


def squared_error(err, mean: bool, factor: float):
    """The loss of residuals `err` (prediction − target): factor·mean(err²) or factor·Σerr².
    `REDUCTIONS[kind]` gives (mean, factor) for each of the four kinds."""
    s = (err * err).mean() if mean else (err * err).sum()
    return s if factor == 1.0 else s * factor


def squared_error_grad(err, mean: bool, factor: float):
    """∂loss/∂prediction for `squared_error`."""
    return err * (2.0 * factor / err.shape[0] if mean else 2.0 * factor)  # shape[0]: len() is slow on tensors


# ------------------------------------------------------------------------ activations
def activate(z, kind: Activation):
    if kind is Activation.identity:
        return z
    if isinstance(z, torch.Tensor):
        return torch.sigmoid(z) if kind is Activation.sigmoid else torch.tanh(z)
    # σ(z) = ½(1 + tanh(z/2)) does not overflow for large |z|, unlike 1/(1+exp(-z)).
    return 0.5 * (1.0 + np.tanh(0.5 * z)) if kind is Activation.sigmoid else np.tanh(z)


def activation_slope(a, kind: Activation):
    """dσ/dz written in terms of the output a = σ(z)."""
    if kind is Activation.sigmoid:
        return a * (1.0 - a)
    if kind is Activation.tanh:
        return 1.0 - a * a
    return 1.0


# ----------------------------------------------------------------------------- models
class Model:
    """Base class: parameter shapes, initialisation, and the optional closed-form optimum."""

    objective = False  # a function of its parameters alone (no data)
    torch_module = False  # its parameters belong to a torch.nn.Module (`self.module`)
    module: nn.Module | None = None

    @classmethod
    def from_config(cls, cfg, n_inputs: int) -> "Model":
        return cls(n_inputs)

    def __init__(self, n_inputs: int):
        self.n_inputs = n_inputs
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.fan_in: dict[str, int] = {}

    def forward(self, p, x):
        raise NotImplementedError

    def backward(self, p, x, g) -> dict:
        raise NotImplementedError

    def features(self, x):
        """The design matrix Φ with f(x) = Φθ, θ the parameters flattened in order; None if not linear."""
        return None

    def init(self, gen: torch.Generator, cfg) -> dict[str, torch.Tensor]:
        """Initial values (float64, CPU) from the run's generator, then `model.start` applied."""
        params = {}
        for name, shape in self.shapes.items():
            if cfg.init is Init.zeros:
                v = torch.zeros(shape, dtype=torch.float64)
            elif cfg.init is Init.uniform:
                bound = 1.0 / math.sqrt(self.fan_in[name])
                v = (torch.rand(shape, generator=gen, dtype=torch.float64) * 2 - 1) * bound
            else:
                v = cfg.init_scale * torch.randn(shape, generator=gen, dtype=torch.float64)
            params[name] = v
        for name, value in dict(cfg.start).items():
            if value is None:  # listed but not fixed
                continue
            if name not in params:
                raise ConfigError(f"model.start.{name}", value, f"{cfg.name} has parameters {list(params)}")
            target = params[name]
            try:
                t = torch.as_tensor(value, dtype=torch.float64)
                params[name] = t.expand(target.shape).clone() if t.numel() == 1 else t.reshape(target.shape)
            except (RuntimeError, TypeError, ValueError):
                raise ConfigError(
                    f"model.start.{name}", value, f"needs a number or {target.numel()} numbers (shape {tuple(target.shape)})"
                ) from None
        return params


class Linear(Model):
    """f(x) = x·w + b."""

    def __init__(self, n_inputs: int):
        super().__init__(n_inputs)
        self.shapes = {"w": (n_inputs,), "b": ()}
        self.fan_in = {"w": n_inputs, "b": n_inputs}

    def forward(self, p, x):
        if isinstance(x, torch.Tensor):
            return torch.addmv(p["b"], x, p["w"])  # b + x·w in one op: this runs every step
        return x @ p["w"] + p["b"]

    def backward(self, p, x, g):
        return {"w": x.T @ g, "b": g.sum()}

    def features(self, x):
        return affine_features(x)


def affine_features(x):
    """The design matrix [x, 1] of every model x·w + b."""
    return torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1)


class LinearNoBias(Model):
    """f(x) = x·w (with data=bias_column, the ones column makes w = [slope, intercept])."""

    def __init__(self, n_inputs: int):
        super().__init__(n_inputs)
        self.shapes = {"w": (n_inputs,)}
        self.fan_in = {"w": n_inputs}

    def forward(self, p, x):
        return x @ p["w"]

    def backward(self, p, x, g):
        return {"w": x.T @ g}

    def features(self, x):
        return x


class Quadratic(Model):
    """f(x) = x²·w1 + x·w2 + b."""

    def __init__(self, n_inputs: int):
        super().__init__(n_inputs)
        self.shapes = {"w1": (n_inputs,), "w2": (n_inputs,), "b": ()}
        self.fan_in = {k: n_inputs for k in self.shapes}

    def forward(self, p, x):
        return (x * x) @ p["w1"] + x @ p["w2"] + p["b"]

    def backward(self, p, x, g):
        return {"w1": (x * x).T @ g, "w2": x.T @ g, "b": g.sum()}

    def features(self, x):
        return torch.cat([x * x, x, torch.ones(len(x), 1, dtype=x.dtype)], 1)


class _AB(nn.Module):
    """The hand-made module of the tutorials: two nn.Parameters, f(x) = x·a + b."""

    def __init__(self, n_inputs: int):
        super().__init__()
        self.a = nn.Parameter(torch.zeros(n_inputs))
        self.b = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return x @ self.a + self.b


class ParameterModule(Model):
    torch_module = True

    def __init__(self, n_inputs: int):
        super().__init__(n_inputs)
        self.module = _AB(n_inputs)
        self.shapes = {"a": (n_inputs,), "b": ()}
        self.fan_in = {"a": n_inputs, "b": n_inputs}

    def forward(self, p, x):
        if isinstance(x, np.ndarray):  # plain arrays (plots): the same formula, written out
            return x @ p["a"] + p["b"]
        return self.module(x)

    def backward(self, p, x, g):
        return {"a": x.T @ g, "b": g.sum()}

    def features(self, x):
        return affine_features(x)


class NNLinear(Model):
    """torch.nn.Linear(d, 1): weight (1, d), bias (1,)."""

    torch_module = True

    def __init__(self, n_inputs: int):
        super().__init__(n_inputs)
        self.module = nn.Linear(n_inputs, 1)
        self.shapes = {"weight": (1, n_inputs), "bias": (1,)}
        self.fan_in = {"weight": n_inputs, "bias": n_inputs}

    def forward(self, p, x):
        if isinstance(x, np.ndarray):
            return x @ p["weight"][0] + p["bias"][0]
        return self.module(x)[:, 0]

    def backward(self, p, x, g):
        return {"weight": (x.T @ g)[None], "bias": g.sum().reshape(1)}

    def features(self, x):
        return affine_features(x)


class MLP(Model):
    """d inputs -> `hidden` units -> 1 output; backpropagation written out by hand."""

    @classmethod
    def from_config(cls, cfg, n_inputs: int) -> "MLP":
        return cls(n_inputs, cfg.hidden, cfg.activation, cfg.output_activation)

    def __init__(self, n_inputs: int, hidden: int, activation: Activation, output: Activation):
        super().__init__(n_inputs)
        self.act, self.out = activation, output
        self.shapes = {"W1": (n_inputs, hidden), "b1": (hidden,), "W2": (hidden,), "b2": ()}
        self.fan_in = {"W1": n_inputs, "b1": n_inputs, "W2": hidden, "b2": hidden}

    def forward(self, p, x):
        h = activate(x @ p["W1"] + p["b1"], self.act)
        return activate(h @ p["W2"] + p["b2"], self.out)

    def backward(self, p, x, g):
        h = activate(x @ p["W1"] + p["b1"], self.act)
        out = activate(h @ p["W2"] + p["b2"], self.out)
        dz2 = g * activation_slope(out, self.out)  # (n,)
        dz1 = dz2[:, None] * p["W2"][None, :] * activation_slope(h, self.act)  # (n, hidden)
        return {"W1": x.T @ dz1, "b1": dz1.sum(0), "W2": h.T @ dz2, "b2": dz2.sum()}


class Rosenbrock(Model):
    """(a − x)² + b·(y − x²)², minimum 0 at (a, a²)."""

    objective = True

    @classmethod
    def from_config(cls, cfg, n_inputs: int) -> "Rosenbrock":
        return cls(cfg.a, cfg.b)

    def __init__(self, a: float, b: float):
        super().__init__(0)
        self.a, self.b = a, b
        self.shapes = {"x": (), "y": ()}
        self.fan_in = {"x": 1, "y": 1}

    def value(self, p):
        x, y = p["x"], p["y"]
        return (self.a - x) ** 2 + self.b * (y - x * x) ** 2

    def gradient(self, p):
        x, y = p["x"], p["y"]
        return {"x": -2.0 * (self.a - x) - 4.0 * self.b * x * (y - x * x), "y": 2.0 * self.b * (y - x * x)}

    def optimum(self):
        return {"x": self.a, "y": self.a**2}, 0.0


class Bowl(Model):
    """x² + 2x + 1 = (x + 1)², minimum 0 at x = −1."""

    objective = True

    @classmethod
    def from_config(cls, cfg, n_inputs: int) -> "Bowl":
        return cls()

    def __init__(self):
        super().__init__(0)
        self.shapes = {"x": ()}
        self.fan_in = {"x": 1}

    def value(self, p):
        x = p["x"]
        return x * x + 2.0 * x + 1.0

    def gradient(self, p):
        return {"x": 2.0 * p["x"] + 2.0}

    def optimum(self):
        return {"x": -1.0}, 0.0


# Option name -> the model class; `from_config(cfg, n_inputs)` builds it for data with n_inputs columns.
MODELS: dict[str, type[Model]] = {
    "linear": Linear, "linear_nobias": LinearNoBias, "quadratic": Quadratic, "parameter_module": ParameterModule,
    "nn_linear": NNLinear, "mlp": MLP, "rosenbrock": Rosenbrock, "bowl": Bowl,
}


def build(cfg, n_inputs: int) -> Model:
    """The model a `model` config names."""
    return MODELS[cfg.name].from_config(cfg, n_inputs)


def least_squares(model: Model, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor] | None:
    """Closed-form optimum for a model linear in its parameters (float64), else None.

    `gelsd` gives the same answer on every call; the default CPU driver varies in the last bits.
    """
    phi = model.features(x)
    if phi is None:
        return None
    theta = torch.linalg.lstsq(phi.double(), y.double()[:, None], driver="gelsd").solution[:, 0]
    out, i = {}, 0
    for name, shape in model.shapes.items():
        n = math.prod(shape)
        out[name] = theta[i:i + n].reshape(shape)
        i += n
    return out
