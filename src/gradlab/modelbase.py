"""The base of every model: parameter shapes and layouts, initialisation, `model.start`.

Apart from models.py so that the shipped models (models.py) and a user's own (usermodels.py)
share it, and models.py can list both in one registry without an import cycle.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from gradlab.options import ConfigError, Init


class Model:
    """Base class: parameter shapes and layouts, initialisation, the optional closed-form optimum."""

    objective = False  # a function of its parameters alone (no data)
    torch_module = False  # its forward pass is a torch.nn.Module's (`self.module`)
    module: nn.Module | None = None

    @classmethod
    def from_config(cls, cfg, n_inputs: int) -> "Model":
        return cls(n_inputs)

    def __init__(self, n_inputs: int):
        self.n_inputs = n_inputs
        self.shapes: dict[str, tuple[int, ...]] = {}  # per configuration, as users see them
        self.layout: dict[str, tuple[int, ...]] = {}  # per configuration, as stored (same values, same order)
        self.fan_in: dict[str, int] = {}
        self.width = 1  # values a forward pass holds per sample, at most (its widest layer)

    def forward(self, p, x):
        raise NotImplementedError

    def backward(self, p, x, g) -> dict:
        raise NotImplementedError

    def features(self, x):
        """The design matrix Φ of inputs x (n, d) with f(x) = Φθ, θ the parameters flattened in
        order; None if the model is not linear in its parameters."""
        return None

    def predict(self, params: dict, x) -> np.ndarray:
        """Predictions (n,) of one configuration's parameters (as users see them) on inputs x (n, d)."""
        p = {k: np.asarray(v, dtype=np.float64).reshape(1, *self.layout[k]) for k, v in params.items()}
        return self.forward(p, np.asarray(x, dtype=np.float64)[None])[0, :, 0]

    def init(self, gen: torch.Generator, cfg, seed: int = 0) -> dict[str, torch.Tensor]:
        """One configuration's initial values (float64, CPU, as users see them) from its
        generator, then `model.start` applied. `seed` is the configuration's train.seed (a user's
        module initialises itself under it)."""
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
        return apply_start(params, start_values(cfg.start, cfg.name), cfg.name)

    def check(self, params: dict, x) -> None:
        """What can only be seen by running it (a user's code): raise ConfigError if one
        configuration's parameters `params` (1, *layout) on inputs x (1, n, d) do not work."""


def start_values(start, model: str) -> dict:
    """`model.start` by parameter name; a model's parameters are named, so a list is refused."""
    if start is None:
        return {}
    if not isinstance(start, dict):
        raise ConfigError("model.start", start, f"model={model} takes starting values by parameter name, "
                          "e.g. model.start.w=1 (a list is model=objective's)")
    return dotted(start)


def dotted(start: dict, prefix: str = "") -> dict:
    """`model.start` with nested keys joined by dots: Hydra makes `model.start.fc.bias=0` into
    {fc: {bias: 0}}, the parameter named `fc.bias`."""
    out = {}
    for k, v in dict(start).items():
        if isinstance(v, dict):
            out.update(dotted(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def apply_start(params: dict, start: dict, model: str) -> dict:
    """`params` with the values `start` fixes put in (a number fills a parameter; a list gives
    every element); None leaves a parameter as it was."""
    for name, value in start.items():
        if value is None:  # listed but not fixed
            continue
        if name not in params:
            raise ConfigError(f"model.start.{name}", value, f"{model} has parameters {list(params)}")
        target = params[name]
        try:
            t = torch.as_tensor(value, dtype=torch.float64)
            params[name] = t.expand(target.shape).clone() if t.numel() == 1 else t.reshape(target.shape)
        except (RuntimeError, TypeError, ValueError):
            raise ConfigError(
                f"model.start.{name}", value, f"needs a number or {target.numel()} numbers (shape {tuple(target.shape)})"
            ) from None
    return params
