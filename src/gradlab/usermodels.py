"""A user's own model (`model=module`: an nn.Module) or objective (`model=objective`: f(θ) -> scalar),
batched as the shipped models are: every configuration's parameters on a leading axis, the user's
code applied to each with torch.func.vmap (one program for the batch, a single run a batch of one).

Code that vmap cannot run (data-dependent Python control flow, `.item()`, in-place ops on its
inputs, its own random draws) is applied configuration by configuration instead: slower, the
same values. What is wrong with the code itself (it does not import, is not callable, returns the
wrong thing at the start) is a ConfigError naming `model.target`, raised before any run exists.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
from torch import nn

import gradlab.targets as targets
from gradlab.modelbase import Model, apply_start, start_values
from gradlab.options import ConfigError

KEY = "model.target"


class PerConfiguration:
    """`fn` applied to each configuration of batched arguments (tensors, or dicts of tensors,
    with the configuration axis first): vmap where the code allows, else a loop. Which one is
    settled by the first call; an error after vmap has worked once is the code's own."""

    def __init__(self, fn: Callable):
        self.fn, self.vmapped = fn, torch.func.vmap(fn)
        self.mode: str | None = None  # "vmap" or "loop" once known

    def __call__(self, *args):
        if self.mode != "loop":
            try:
                out = self.vmapped(*args)
                self.mode = "vmap"
                return out
            except Exception:  # noqa: BLE001 - vmap refuses what it cannot batch; the loop says the code's own error
                if self.mode == "vmap":
                    raise
                self.mode = "loop"
        configs = len(next(iter(args[0].values())) if isinstance(args[0], dict) else args[0])
        return torch.stack([self.fn(*(_one(a, i) for a in args)) for i in range(configs)])


def _one(arg, i: int):
    return {k: v[i] for k, v in arg.items()} if isinstance(arg, dict) else arg[i]


def _raised(spec: str, e: Exception, where: str, key: str = KEY) -> ConfigError:
    return ConfigError(key, spec, f"raised {targets.error_line(e)} {where}")


def _scalar(key: str, spec: str, out, where: str) -> float:
    """What the user's function returned, as a float: it must be a finite scalar tensor."""
    if not isinstance(out, torch.Tensor):
        raise ConfigError(key, spec, f"returned a {type(out).__name__} {where}, not a tensor: compute it with "
                          "torch operations on its arguments so that gradients flow")
    if out.numel() != 1:
        raise ConfigError(key, spec, f"returned shape {tuple(out.shape)} {where}, not a scalar")
    value = float(out)
    if not math.isfinite(value):
        raise ConfigError(key, spec, f"is {value} {where}; start where it is finite")
    return value


# --------------------------------------------------------------------------- objective
def default_names(n: int) -> list[str]:
    """θ's entries as users write them: x, y, z for up to three, else theta.0, theta.1, …"""
    return ["x", "y", "z"][:n] if n <= 3 else [f"theta.{i}" for i in range(n)]


class UserObjective(Model):
    """f(θ) -> scalar, θ a 1-D tensor; each entry of θ is a scalar parameter named by
    `model.names`. The optimum, where `model.optimum` gives it, is (that point, f there)."""

    objective = True

    @classmethod
    def from_config(cls, cfg, n_inputs: int) -> "UserObjective":
        return cls(targets.resolve(KEY, cfg.target), cfg.start, cfg.names, cfg.optimum)

    def __init__(self, target: targets.Target, start, names, optimum):
        super().__init__(0)
        self.target, self.fn = target, target.obj
        if not callable(self.fn):
            raise ConfigError(KEY, target.spec, f"is a {type(self.fn).__name__}, not a function f(theta) -> scalar")
        if not isinstance(start, (list, tuple)) or not start:
            raise ConfigError("model.start", start, "model=objective needs its starting point as a list, "
                              "e.g. model.start=[-1.5,2]")
        self.names = list(names) if names else default_names(len(start))
        if len(self.names) != len(start) or len(set(self.names)) != len(self.names):
            raise ConfigError("model.names", names, f"needs {len(start)} different names, one per entry of model.start")
        if optimum is not None and len(optimum) != len(start):
            raise ConfigError("model.optimum", optimum, f"needs {len(start)} numbers, as model.start has")
        self.known_optimum = None if optimum is None else [float(v) for v in optimum]
        self.shapes = self.layout = {n: () for n in self.names}
        self.fan_in = {n: 1 for n in self.names}
        self.batched = PerConfiguration(self.fn)

    def init(self, gen: torch.Generator, cfg, seed: int = 0) -> dict[str, torch.Tensor]:
        """`model.start`, checked: f must give a finite scalar tensor there."""
        start = list(cfg.start or []) if isinstance(cfg.start, (list, tuple)) else cfg.start
        if not isinstance(start, list) or len(start) != len(self.names):
            raise ConfigError("model.start", start, f"needs {len(self.names)} numbers ({', '.join(self.names)})")
        theta = torch.tensor([float(v) for v in start], dtype=torch.float64)
        self._check_at(theta, f"at model.start={start}")
        return {n: theta[i].clone() for i, n in enumerate(self.names)}

    def _check_at(self, theta: torch.Tensor, where: str) -> float:
        spec = self.target.spec
        try:
            out = self.fn(theta.clone())
        except Exception as e:  # noqa: BLE001 - the user's code, whatever it raises
            raise _raised(spec, e, where) from None
        return _scalar(KEY, spec, out, where)

    def value(self, p):
        """f at each configuration's θ (B,); NumPy arrays of points (a contour's grid) give an array."""
        first = next(iter(p.values()))
        if not isinstance(first, torch.Tensor):
            with torch.no_grad():
                grid = {k: torch.as_tensor(np.asarray(v, dtype=np.float64)) for k, v in p.items()}
                return self.value(grid).numpy()
        theta = torch.stack([p[n] for n in self.names], -1)  # (B, D)
        return self.batched(theta).reshape(theta.shape[0])

    def optimum(self):
        if self.known_optimum is None:
            return None, None
        theta = torch.tensor(self.known_optimum, dtype=torch.float64)
        return dict(zip(self.names, self.known_optimum)), self._check_at(theta, f"at model.optimum={self.known_optimum}")


# ------------------------------------------------------------------------------ module
class UserModule(Model):
    """An nn.Module (a class, or a function that returns one, made with `model.args`) mapping
    inputs (n, d) to predictions (n, 1) or (n,). Its parameters are its named_parameters(),
    initialised as the module does under torch.manual_seed(train.seed); the forward pass is
    torch.func.functional_call with each configuration's parameters."""

    torch_module = True

    @classmethod
    def from_config(cls, cfg, n_inputs: int) -> "UserModule":
        return cls(targets.resolve(KEY, cfg.target), dict(cfg.args or {}), n_inputs)

    def __init__(self, target: targets.Target, args: dict, n_inputs: int):
        super().__init__(n_inputs)
        self.target, self.args = target, args
        if not callable(target.obj):
            raise ConfigError(KEY, target.spec, f"is a {type(target.obj).__name__}, not an nn.Module class or a "
                              "function that returns one")
        self.module = self.build(0)  # the template functional_call runs (its buffers, its code)
        params = dict(self.module.named_parameters())
        if not params:
            raise ConfigError(KEY, target.spec, "has no parameters (nn.Parameter) to train")
        self.shapes = self.layout = {k: tuple(v.shape) for k, v in params.items()}
        self.fan_in = {}
        self.batched = PerConfiguration(self._call_one)
        self._placed = None  # the dtype and device the template's buffers are on

    def build(self, seed: int) -> nn.Module:
        """The module made as the user's own script makes it: torch.manual_seed(seed), then the
        constructor (the global generator is left as it was)."""
        spec = self.target.spec
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            try:
                module = self.target.obj(**self.args)
            except TypeError as e:
                raise ConfigError(KEY, spec, f"cannot be made with model.args={self.args}: "
                                  f"{targets.error_line(e)}") from None
            except Exception as e:  # noqa: BLE001 - the user's constructor, whatever it raises
                raise _raised(spec, e, f"when made with model.args={self.args}") from None
        if not isinstance(module, nn.Module):
            raise ConfigError(KEY, spec, f"made a {type(module).__name__}, not a torch.nn.Module")
        return module

    def init(self, gen: torch.Generator, cfg, seed: int = 0) -> dict[str, torch.Tensor]:
        made = self.build(seed)
        params = {k: v.detach().to(torch.float64).clone() for k, v in made.named_parameters()}
        return apply_start(params, start_values(cfg.start, cfg.name), cfg.name)

    def _call_one(self, params: dict, x):
        return torch.func.functional_call(self.module, params, (x,))

    def forward(self, p, x):
        if not isinstance(x, torch.Tensor):  # plain arrays (plots): float64 on the CPU
            with torch.no_grad():
                p = {k: torch.as_tensor(np.asarray(v, dtype=np.float64)) for k, v in p.items()}
                return self.forward(p, torch.as_tensor(np.asarray(x, dtype=np.float64))).numpy()
        if self._placed != (x.dtype, x.device):  # buffers (a BatchNorm's statistics, a mask) follow the data
            self.module.to(dtype=x.dtype, device=x.device)
            self._placed = (x.dtype, x.device)
        out = self.batched(p, x)
        return out.reshape(x.shape[0], x.shape[1], 1)

    def check(self, params: dict, x) -> None:
        n, d = x.shape[1], x.shape[2]
        try:
            with torch.no_grad():
                if self._placed != (x.dtype, x.device):
                    self.module.to(dtype=x.dtype, device=x.device)
                    self._placed = (x.dtype, x.device)
                out = self.batched({k: v.detach() for k, v in params.items()}, x)
        except Exception as e:  # noqa: BLE001 - the user's forward, whatever it raises
            raise _raised(self.target.spec, e, f"on inputs of shape ({n}, {d})") from None
        if tuple(out.shape[1:]) not in ((n, 1), (n,)):
            raise ConfigError(KEY, self.target.spec, f"maps inputs of shape ({n}, {d}) to {tuple(out.shape[1:])}; "
                              f"it must give predictions of shape ({n}, 1) or ({n},)")


# -------------------------------------------------------------------------------- loss
LOSS_KEY = "train.loss_target"


class UserLoss:
    """train.loss=module: the user's loss(pred, target) -> scalar, pred and target one
    configuration's (n, 1); batched, each configuration's loss (B,)."""

    def __init__(self, spec):
        self.target = targets.resolve(LOSS_KEY, spec)
        if not callable(self.target.obj):
            raise ConfigError(LOSS_KEY, spec, f"is a {type(self.target.obj).__name__}, not a function loss(pred, target)")
        self.batched = PerConfiguration(self.target.obj)

    def __call__(self, pred, y):
        return self.batched(pred, y).reshape(pred.shape[0])

    def check(self, pred, y) -> None:
        """One configuration's loss at its start: a finite scalar tensor."""
        where = f"on predictions and targets of shape {tuple(pred.shape)} at the start"
        try:
            out = self.target.obj(pred, y)
        except Exception as e:  # noqa: BLE001 - the user's code, whatever it raises
            raise _raised(self.target.spec, e, where, LOSS_KEY) from None
        _scalar(LOSS_KEY, self.target.spec, out, where)
