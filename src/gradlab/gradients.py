"""Gradient methods: each is `step(problem, params, batch) -> (loss (B,), grads)` for a batch of
configurations, `grads` a list in the order of the parameters, each with the configuration axis.

They compute gradients and nothing else (no update), so any of them pairs with any optimizer.
Configurations never mix: each one's gradient is its own.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from gradlab.problem import Problem

GradFn = Callable[[Problem, dict, object], tuple[object, list]]


def analytic(cfg=None) -> GradFn:
    """The hand-derived formulas of the model (and of the loss, by the chain rule)."""

    def step(problem: Problem, params: dict, batch):
        loss, grads = problem.analytic(params, batch)
        return loss, [grads[n] for n in params]

    return step


def autograd(cfg=None) -> GradFn:
    """`loss.backward()` on the sum over configurations: torch records the forward pass and
    differentiates it; since no configuration depends on another, each gets its own gradient."""

    def step(problem: Problem, params: dict, batch):
        plist = list(params.values())
        for p in plist:
            p.grad = None
        loss = problem.loss(params, batch)
        loss.backward(torch.ones_like(loss))  # the gradient of the sum over configurations
        return loss.detach(), [p.grad for p in plist]

    return step


def default_eps(dtype: torch.dtype) -> float:
    """Central differences balance truncation (∝h²) against rounding (∝ε/h): h ≈ ε^(1/3)."""
    return torch.finfo(dtype).eps ** (1.0 / 3.0)


def finite_difference(cfg=None) -> GradFn:
    """Central differences, ∂L/∂θⱼ ≈ (L(θ+hⱼeⱼ) − L(θ−hⱼeⱼ)) / (2hⱼ), for every element j of every
    configuration in one evaluation of the loss: each configuration becomes 2P+1 parameter sets
    (θ itself, then each element raised, then each lowered), evaluated on copies of its batch.

    The step is relative, hⱼ = eps·max(1, |θⱼ|), and the denominator uses θⱼ ± hⱼ as the dtype
    stores them, so rounding does not bias the quotient.
    """
    eps = getattr(cfg, "eps", None)
    cache: dict = {}  # what depends only on the shapes and on the batch object, reused every step

    def signs(n: int, like: torch.Tensor) -> torch.Tensor:
        """(2P+1, P): the unperturbed set, +1 on each element, then −1 on each element."""
        key = ("signs", n, like.dtype, like.device)
        if key not in cache:
            eye = torch.eye(n, dtype=like.dtype, device=like.device)
            cache[key] = torch.cat([torch.zeros(1, n, dtype=like.dtype, device=like.device), eye, -eye])
        return cache[key]

    def copies(batch, k: int):
        """Each configuration's batch, k times over (the same full batch every epoch: made once)."""
        if batch is None:
            return None
        if cache.get("batch") is not batch or cache.get("k") != k:
            cache.update(batch=batch, k=k, copies=tuple(t.repeat_interleave(k, dim=0) for t in batch))
        return cache["copies"]

    @torch.no_grad()
    def step(problem: Problem, params: dict, batch):
        configs = problem.configs
        flat = torch.cat([p.detach().reshape(configs, -1) for p in params.values()], 1)  # (B, P)
        n = flat.shape[1]
        h = (default_eps(flat.dtype) if eps is None else eps) * flat.abs().clamp(min=1.0)
        sets = flat.unsqueeze(1) + signs(n, flat) * h.unsqueeze(1)  # (B, 2P+1, P)
        losses = problem.loss(_unflatten(sets.reshape(-1, n), params), copies(batch, 2 * n + 1)).reshape(configs, -1)
        g = (losses[:, 1:n + 1] - losses[:, n + 1:]) / ((flat + h) - (flat - h))
        return losses[:, 0], list(_unflatten(g, params).values())

    return step


def _unflatten(flat: torch.Tensor, like: dict) -> dict:
    """(rows, P) values back into parameters shaped like `like` (with `rows` configurations)."""
    out, i = {}, 0
    for name, p in like.items():
        k = math.prod(p.shape[1:])
        out[name] = flat[:, i:i + k].reshape(flat.shape[0], *p.shape[1:])
        i += k
    return out


# What each method needs of the parameters: a graph (they require grad), torch tensors.
analytic.needs_graph, analytic.on_numpy = False, True  # the same formulas run on NumPy arrays
autograd.needs_graph, autograd.on_numpy = True, False
finite_difference.needs_graph, finite_difference.on_numpy = False, False

# Option name -> the gradient method it builds.
METHODS = {"analytic": analytic, "autograd": autograd, "finite_difference": finite_difference}


def build(cfg) -> GradFn:
    return METHODS[cfg.name](cfg)
