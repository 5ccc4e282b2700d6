"""Gradient methods: each turns a problem and its parameters into `step(batch) -> (loss, grads)`.

They compute gradients and nothing else (no update), so any of them pairs with any optimizer.
`grads` is a list in the order of the parameters.
"""

from __future__ import annotations

from typing import Callable

import torch

from gradlab.problem import Problem

GradFn = Callable[[object], tuple[object, list]]


def analytic(problem: Problem, params: dict) -> GradFn:
    """The hand-derived formulas of the model (and of the loss, by the chain rule)."""
    names = list(params)

    def step(batch):
        loss, grads = problem.analytic(params, batch)
        return loss, [grads[n] for n in names]

    # Parameters that require grad (torch.optim, nn.Module) would make torch record a graph.
    if any(getattr(p, "requires_grad", False) for p in params.values()):
        return torch.no_grad()(step)
    return step


def autograd(problem: Problem, params: dict) -> GradFn:
    """`loss.backward()`: torch records the forward pass and differentiates it."""
    plist = list(params.values())

    def step(batch):
        for p in plist:
            p.grad = None
        loss = problem.loss(params, batch)
        loss.backward()
        return loss.detach(), [p.grad for p in plist]

    return step


def default_eps(dtype: torch.dtype) -> float:
    """Central differences balance truncation (∝h²) against rounding (∝ε/h): h ≈ ε^(1/3)."""
    return torch.finfo(dtype).eps ** (1.0 / 3.0)


def finite_difference(problem: Problem, params: dict, eps: float | None = None) -> GradFn:
    """Central differences, one parameter element at a time: ∂L/∂θᵢ ≈ (L(θ+hεᵢ) − L(θ−hεᵢ)) / 2h.

    The step is relative, h = eps·max(1, |θᵢ|), and the denominator uses the perturbed values as
    stored, so the rounding of θᵢ ± h in the run's dtype does not bias the quotient.
    """
    plist = list(params.values())

    @torch.no_grad()
    def step(batch):
        loss = problem.loss(params, batch)
        grads = []
        for p in plist:
            h0 = default_eps(p.dtype) if eps is None else eps
            flat = p.view(-1)
            g = torch.empty_like(flat)
            for i in range(flat.numel()):
                orig = flat[i].item()
                h = h0 * max(1.0, abs(orig))
                flat[i] = orig + h
                up, lp = flat[i].item(), problem.loss(params, batch).item()
                flat[i] = orig - h
                down, lm = flat[i].item(), problem.loss(params, batch).item()
                flat[i] = orig
                g[i] = (lp - lm) / (up - down)
            grads.append(g.view(p.shape))
        return loss, grads

    return step


METHODS = {"analytic": analytic, "autograd": autograd, "finite_difference": finite_difference}


def build(cfg, problem: Problem, params: dict) -> GradFn:
    if cfg.name == "finite_difference":
        return finite_difference(problem, params, cfg.eps)
    return METHODS[cfg.name](problem, params)
