"""Models and objectives: prediction, the hand-derived gradient, the closed-form optimum, for a
batch of configurations at once.

Every parameter carries a leading configuration axis: a batch of B configurations trains B
independent copies of the model, each on its own data. Inputs x are (B, n, d), targets and
predictions (B, n, 1). A parameter is stored per configuration in its `layout` (w as a column
(d, 1), b as (1, 1)), so that a forward pass is one batched matrix product; `shapes` are the
parameters as users see them (w (d,), b ()), with the same values in the same order.

The formulas use only operations that torch tensors and NumPy arrays share (`@`, `*`, `.sum`,
`.swapaxes`, indexing), so the same hand-derived gradient runs on either; `device=numpy` depends
on it. `backward(p, x, g)` returns Σᵢ gᵢ·∂f(xᵢ)/∂θ for every parameter: the chain rule's last step,
given g = ∂loss/∂prediction. An objective (Rosenbrock, the bowl) is a function of its parameters.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from gradlab.modelbase import Model
from gradlab.options import Activation, Loss
from gradlab.usermodels import PerConfiguration, UserModule, UserObjective

# ---------------------------------------------------------------------------- losses
REDUCTIONS = {  # name: (mean over samples?, factor)
    Loss.mse: (True, 1.0),
    Loss.sse: (False, 1.0),
    Loss.half_mse: (True, 0.5),
    Loss.half_sse: (False, 0.5),
}
SAMPLES = (1, 2)  # the axes of a residual (B, n, 1) that a loss reduces, per configuration


_CONSTANTS: dict = {}


def constant(value: float, like):
    """`value` for an op with `like`: on torch, a cached 0-dim CPU tensor of its dtype. A Python
    number in a torch op is wrapped into a new tensor at every call (about 1.3 µs, a training
    loop's op costs 1-2 µs); a 0-dim CPU tensor takes the kernels' CPU-scalar path as the number
    does, on every device, to the bit. Made outside inference mode: autograd may save it."""
    if not isinstance(like, torch.Tensor):
        return value
    key = (value, like.dtype)
    c = _CONSTANTS.get(key)
    if c is None:
        with torch.inference_mode(False):
            c = _CONSTANTS[key] = torch.tensor(value, dtype=like.dtype)
    return c


def squared_error(err, mean: bool, factor: float):
    """The loss of each configuration's residuals `err` (B, n, 1): factor·mean(err²) or factor·Σerr².
    `REDUCTIONS[kind]` gives (mean, factor) for each of the four kinds. The mean is the sum over n
    divided by n, as torch's mean computes it (and half the time of torch's mean on small batches)."""
    s = (err * err).sum(SAMPLES)
    if mean:
        s = s / constant(float(err.shape[1]), s)
    return s if factor == 1.0 else s * constant(factor, s)


def squared_error_grad(err, mean: bool, factor: float):
    """∂loss/∂prediction for `squared_error`."""
    return err * constant(2.0 * factor / err.shape[1] if mean else 2.0 * factor, err)


def affine(x, w, b):
    """x @ w + b, batched: one fused op on torch tensors."""
    if isinstance(x, torch.Tensor):
        return torch.baddbmm(b, x, w)
    return x @ w + b


def tmul(a, b):
    """aᵀ @ b, batched (a (B, n, k), b (B, n, m) -> (B, k, m)): the backward pass's product."""
    if isinstance(a, torch.Tensor):
        return torch.bmm(a.transpose(1, 2), b)  # bmm: a third of `@`'s dispatch cost here
    return a.swapaxes(1, 2) @ b


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
def affine_features(x):
    """The design matrix [x, 1] of every model x·w + b."""
    return torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1)


class Linear(Model):
    """f(x) = x·w + b."""

    def __init__(self, n_inputs: int):
        super().__init__(n_inputs)
        self.shapes = {"w": (n_inputs,), "b": ()}
        self.layout = {"w": (n_inputs, 1), "b": (1, 1)}
        self.fan_in = {"w": n_inputs, "b": n_inputs}

    def forward(self, p, x):
        return affine(x, p["w"], p["b"])

    def backward(self, p, x, g):
        return {"w": tmul(x, g), "b": g.sum(1, keepdims=True)}

    def features(self, x):
        return affine_features(x)


class LinearNoBias(Model):
    """f(x) = x·w (with data=bias_column, the ones column makes w = [slope, intercept])."""

    def __init__(self, n_inputs: int):
        super().__init__(n_inputs)
        self.shapes = {"w": (n_inputs,)}
        self.layout = {"w": (n_inputs, 1)}
        self.fan_in = {"w": n_inputs}

    def forward(self, p, x):
        return x @ p["w"]

    def backward(self, p, x, g):
        return {"w": tmul(x, g)}

    def features(self, x):
        return x


class Quadratic(Model):
    """f(x) = x²·w1 + x·w2 + b."""

    def __init__(self, n_inputs: int):
        super().__init__(n_inputs)
        self.shapes = {"w1": (n_inputs,), "w2": (n_inputs,), "b": ()}
        self.layout = {"w1": (n_inputs, 1), "w2": (n_inputs, 1), "b": (1, 1)}
        self.fan_in = {k: n_inputs for k in self.shapes}

    def forward(self, p, x):
        return affine(x, p["w2"], affine(x * x, p["w1"], p["b"]))

    def backward(self, p, x, g):
        return {"w1": tmul(x * x, g), "w2": tmul(x, g), "b": g.sum(1, keepdims=True)}

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


class _ModuleModel(Model):
    """A model whose forward pass is an nn.Module's, called with each configuration's own
    parameters in place of the module's: torch.func.functional_call under vmap, one program
    for the batch, as a user's module runs (usermodels.UserModule)."""

    torch_module = True

    def __init__(self, n_inputs: int):
        super().__init__(n_inputs)
        self.batched = PerConfiguration(self._call_one)

    def _call_one(self, params: dict, x):
        return torch.func.functional_call(self.module, params, (x,))

    def forward(self, p, x):
        if not isinstance(x, torch.Tensor):  # plain arrays (plots): the same formula, written out
            return self.formula(p, x)
        return self.batched(p, x).reshape(x.shape[0], x.shape[1], 1)

    def formula(self, p, x):
        raise NotImplementedError


class ParameterModule(_ModuleModel):
    def __init__(self, n_inputs: int):
        super().__init__(n_inputs)
        self.module = _AB(n_inputs)
        self.shapes = self.layout = {"a": (n_inputs,), "b": ()}
        self.fan_in = {"a": n_inputs, "b": n_inputs}

    def formula(self, p, x):
        return x @ p["a"][:, :, None] + p["b"][:, None, None]

    def backward(self, p, x, g):
        return {"a": tmul(x, g)[:, :, 0], "b": g.sum((1, 2))}

    def features(self, x):
        return affine_features(x)


class NNLinear(_ModuleModel):
    """torch.nn.Linear(d, 1): weight (1, d), bias (1,)."""

    def __init__(self, n_inputs: int):
        super().__init__(n_inputs)
        self.module = nn.Linear(n_inputs, 1)
        self.shapes = self.layout = {"weight": (1, n_inputs), "bias": (1,)}
        self.fan_in = {"weight": n_inputs, "bias": n_inputs}

    def formula(self, p, x):
        return x @ p["weight"].swapaxes(1, 2) + p["bias"][:, None, :]

    def backward(self, p, x, g):
        return {"weight": tmul(g, x), "bias": g.sum(1)}

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
        self.layout = {"W1": (n_inputs, hidden), "b1": (1, hidden), "W2": (hidden, 1), "b2": (1, 1)}
        self.fan_in = {"W1": n_inputs, "b1": n_inputs, "W2": hidden, "b2": hidden}
        self.width = hidden

    def forward(self, p, x):
        h = activate(affine(x, p["W1"], p["b1"]), self.act)
        return activate(affine(h, p["W2"], p["b2"]), self.out)

    def backward(self, p, x, g):
        h = activate(affine(x, p["W1"], p["b1"]), self.act)  # (B, n, hidden)
        out = activate(affine(h, p["W2"], p["b2"]), self.out)  # (B, n, 1)
        dz2 = g * activation_slope(out, self.out)  # (B, n, 1)
        dz1 = (dz2 @ p["W2"].swapaxes(1, 2)) * activation_slope(h, self.act)  # (B, n, hidden)
        return {"W1": tmul(x, dz1), "b1": dz1.sum(1, keepdims=True), "W2": tmul(h, dz2), "b2": dz2.sum(1, keepdims=True)}


class Rosenbrock(Model):
    """(a − x)² + b·(y − x²)², minimum 0 at (a, a²)."""

    objective = True

    @classmethod
    def from_config(cls, cfg, n_inputs: int) -> "Rosenbrock":
        return cls(cfg.a, cfg.b)

    def __init__(self, a: float, b: float):
        super().__init__(0)
        self.a, self.b = a, b
        self.shapes = self.layout = {"x": (), "y": ()}
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
        self.shapes = self.layout = {"x": ()}
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
    "module": UserModule, "objective": UserObjective,  # a user's own code (model.target)
}


def build(cfg, n_inputs: int) -> Model:
    """The model a `model` config names."""
    return MODELS[cfg.name].from_config(cfg, n_inputs)


def least_squares(model: Model, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor] | None:
    """Closed-form optimum of one configuration's data (x (n, d), y (n,), float64) for a model
    linear in its parameters, by name in the users' shapes; else None.

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
