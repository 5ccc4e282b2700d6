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


TORCH = {
    "sgd": torch.optim.SGD,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "rmsprop": torch.optim.RMSprop,
    "adagrad": torch.optim.Adagrad,
    "lbfgs": torch.optim.LBFGS,
}
NAMES = ["gd", *TORCH]


def build(cfg, params: list):
    """The optimizer an `optimizer` config names; its fields (but `name`) are the keyword arguments."""
    if cfg.name == "gd":
        return GD(params, cfg.lr)
    kwargs = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name != "name"}
    if "betas" in kwargs:
        kwargs["betas"] = tuple(kwargs["betas"])
    try:
        return TorchOptimizer(TORCH[cfg.name], params, kwargs)
    except ValueError as e:  # torch.optim checks its hyperparameters: "Invalid epsilon value: -1.0"
        m = re.match(r"Invalid (\w+)", str(e))
        word = m.group(1) if m else ""
        field = word if word in kwargs else {"epsilon": "eps", "beta": "betas", "learning": "lr"}.get(word)
        key = f"optimizer.{field}" if field else "optimizer"
        raise ConfigError(key, kwargs.get(field, cfg.name), f"torch.optim.{TORCH[cfg.name].__name__} refuses it: {e}") from None
