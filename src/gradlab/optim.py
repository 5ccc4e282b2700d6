"""Optimizers by name: the hand-written update and torch.optim's, behind one `step`.

A registry, not `_target_`: a user picks a name; nothing they type is imported or called.
"""

from __future__ import annotations

import dataclasses
import re

import torch

from gradlab.options import ConfigError


class GD:
    """The hand-written update p ← p − lr·∇p, in place (tensors or NumPy arrays)."""

    needs_closure = False

    def __init__(self, params: list, lr: float):
        self.params, self.lr = params, lr
        torch_params = bool(params) and isinstance(params[0], torch.Tensor)
        if not torch_params:
            self.step = self._step_arrays
        elif any(p.requires_grad for p in params):  # autograd would record the update otherwise
            self.step = torch.no_grad()(self._step_tensors)
        else:
            self.step = self._step_tensors

    def _step_tensors(self, grads) -> None:
        for p, g in zip(self.params, grads):
            p.sub_(g, alpha=self.lr)

    def _step_arrays(self, grads) -> None:
        for p, g in zip(self.params, grads):
            p -= self.lr * g


class TorchOptimizer:
    """A torch.optim optimizer fed with gradients from any method (they are put in `.grad`)."""

    def __init__(self, cls: type, params: list, kwargs: dict):
        self.params = params
        self.opt = cls(params, **kwargs)
        self.needs_closure = cls is torch.optim.LBFGS

    def set_grads(self, grads) -> None:
        for p, g in zip(self.params, grads):
            if p.grad is not g:
                p.grad = g

    def step(self, grads) -> None:
        self.set_grads(grads)
        self.opt.step()

    def step_closure(self, closure) -> None:
        self.opt.step(closure)


def _kwargs(cfg) -> dict:
    """An optimizer config's fields but `name`: torch.optim's keyword arguments."""
    kwargs = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name != "name"}
    if "betas" in kwargs:
        kwargs["betas"] = tuple(kwargs["betas"])
    return kwargs


def _gd(cfg, params: list) -> GD:
    return GD(params, cfg.lr)


def _torch(cls: type):
    def build(cfg, params: list) -> TorchOptimizer:
        kwargs = _kwargs(cfg)
        try:
            return TorchOptimizer(cls, params, kwargs)
        except ValueError as e:  # torch.optim checks its hyperparameters: "Invalid epsilon value: -1.0"
            m = re.match(r"Invalid (\w+)", str(e))
            word = m.group(1) if m else ""
            field = word if word in kwargs else {"epsilon": "eps", "beta": "betas", "learning": "lr"}.get(word)
            key = f"optimizer.{field}" if field else "optimizer"
            raise ConfigError(key, kwargs.get(field, cfg.name), f"torch.optim.{cls.__name__} refuses it: {e}") from None

    build.on_numpy = False
    return build


_gd.on_numpy = True  # the hand-written update runs on NumPy arrays too


# Option name (the config's `name`) -> the optimizer it builds for a list of parameters.
OPTIMIZERS = {
    "gd": _gd,
    "sgd": _torch(torch.optim.SGD),
    "adam": _torch(torch.optim.Adam),
    "adamw": _torch(torch.optim.AdamW),
    "rmsprop": _torch(torch.optim.RMSprop),
    "adagrad": _torch(torch.optim.Adagrad),
    "lbfgs": _torch(torch.optim.LBFGS),
}


def build(cfg, params: list):
    """The optimizer an `optimizer` config names."""
    return OPTIMIZERS[cfg.name](cfg, params)
