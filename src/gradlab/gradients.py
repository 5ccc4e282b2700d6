"""Gradient methods: each is `step(problem, params, batch) -> (loss (B,), grads)` for a batch of
configurations, `grads` a list in the order of the parameters, each with the configuration axis.

They compute gradients and nothing else (no update), so any of them pairs with any optimizer.
Configurations never mix: each one's gradient is its own.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch.autograd.graph import _engine_run_backward

from gradlab.models import constant
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
        # What loss.backward(ones) runs once it has checked its arguments, which takes ~10 µs of
        # Python a step, a third of a small model's backward pass; the seed is made right here.
        _engine_run_backward((loss,), (torch.ones_like(loss),), False, False, (), allow_unreachable=True, accumulate_grad=True)
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
    cache: dict = {}  # what depends only on the model and on the batch object, reused every step

    def layout(model, like: torch.Tensor) -> dict:
        """The parameters' names, sizes and shapes per configuration, and the signs (2P+1, P): the
        unperturbed set, +1 on each element, then −1 on each element. Made once per model."""
        if cache.get("model") is not model:
            shapes = dict(model.layout)
            sizes = [math.prod(shape) for shape in shapes.values()]
            eye = torch.eye(sum(sizes), dtype=like.dtype, device=like.device)
            cache.update(model=model, layout={"names": list(shapes), "sizes": sizes, "shapes": list(shapes.values()),
                                              "signs": torch.cat([torch.zeros_like(eye[:1]), eye, -eye])})
        return cache["layout"]

    def copies(batch, k: int):
        """Each configuration's batch, k times over (the same full batch every epoch: made once)."""
        if batch is None:
            return None
        if cache.get("batch") is not batch or cache.get("k") != k:
            cache.update(batch=batch, k=k, copies=tuple(t.repeat_interleave(k, dim=0) for t in batch))
        return cache["copies"]

    def unflatten(flat: torch.Tensor, parts: dict) -> list:
        """(rows, P) values back into parameters in their layout, with `rows` configurations."""
        rows = flat.shape[0]
        return [v.view(rows, *shape) for v, shape in zip(torch.split_with_sizes(flat, parts["sizes"], 1), parts["shapes"])]

    # The parameters need no graph (they do not require grad), and torch ops cost 1-2 µs a call
    # here: so no torch.no_grad() to enter, and the fewest ops that keep the quotient's rounding.
    def step(problem: Problem, params: dict, batch):
        configs = problem.configs
        flat = torch.cat([p.reshape(configs, -1) for p in params.values()], 1)  # (B, P)
        n = flat.shape[1]
        parts = layout(problem.model, flat)
        h = constant(default_eps(flat.dtype) if eps is None else eps, flat) * flat.abs().clamp(min=1.0)
        sets = torch.addcmul(flat.unsqueeze(1), parts["signs"], h.unsqueeze(1)).view(-1, n)  # (B·(2P+1), P)
        probes = dict(zip(parts["names"], unflatten(sets, parts)))
        losses = problem.loss(probes, copies(batch, 2 * n + 1)).view(configs, -1)
        g = (losses[:, 1:n + 1] - losses[:, n + 1:]) / ((flat + h) - (flat - h))
        return losses[:, 0], unflatten(g, parts)

    return step


# What each method needs of the parameters: a graph (they require grad), torch tensors.
analytic.needs_graph, analytic.on_numpy = False, True  # the same formulas run on NumPy arrays
autograd.needs_graph, autograd.on_numpy = True, False
finite_difference.needs_graph, finite_difference.on_numpy = False, False

# Option name -> the gradient method it builds.
METHODS = {"analytic": analytic, "autograd": autograd, "finite_difference": finite_difference}


def build(cfg) -> GradFn:
    return METHODS[cfg.name](cfg)
