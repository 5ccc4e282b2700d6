"""Gradient methods: each turns a problem and its parameters into `step(batch) -> (loss, grads)`.

They compute gradients and nothing else (no update), so any of them pairs with any optimizer.
`grads` is a list in the order of the parameters.
"""

from __future__ import annotations

from typing import Callable

import torch

from gradlab.problem import Problem

GradFn = Callable[[object], tuple[object, list]]


def analytic(problem: Problem, params: dict, cfg=None) -> GradFn:
    """The hand-derived formulas of the model (and of the loss, by the chain rule)."""
    names = list(params)

    def step(batch):
        loss, grads = problem.analytic(params, batch)
        return loss, [grads[n] for n in names]

    # Parameters that require grad (torch.optim, nn.Module) would make torch record a graph.
    if any(getattr(p, "requires_grad", False) for p in params.values()):
        return torch.no_grad()(step)
    return step


def autograd(problem: Problem, params: dict, cfg=None) -> GradFn:
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


def finite_difference(problem: Problem, params: dict, cfg=None) -> GradFn:
    """Central differences, one parameter element at a time: ∂L/∂θᵢ ≈ (L(θ+hεᵢ) − L(θ−hεᵢ)) / 2h.

    The step is relative, h = eps·max(1, |θᵢ|), and the denominator uses θᵢ ± h as the dtype
    stores them, so rounding does not bias the quotient.
    """
    import numpy as np

    eps = getattr(cfg, "eps", None)
    plist = list(params.values())
    as_stored = {torch.float32: np.float32, torch.float64: np.float64, torch.float16: np.float16}
    # Per parameter: its flat view, a gradient buffer reused every step, the step size and how
    # the dtype stores a value. Scalars take fill_ (one op) where vectors need indexing (two).
    slots = [(p, p.view(-1), torch.empty_like(p), default_eps(p.dtype) if eps is None else eps,
              as_stored.get(p.dtype, float)) for p in plist]
    grads = [slot[2] for slot in slots]

    def loss_at() -> float:
        return problem.loss(params, batch_now[0]).item()

    batch_now = [None]

    def step(batch):
        batch_now[0] = batch
        loss = problem.loss(params, batch)
        for p, flat, buf, h0, stored in slots:
            values = flat.tolist()
            if len(values) == 1:
                orig = values[0]
                h = h0 * max(1.0, abs(orig))
                up, down = float(stored(orig + h)), float(stored(orig - h))
                p.fill_(up)
                lp = loss_at()
                p.fill_(down)
                lm = loss_at()
                p.fill_(orig)
                buf.fill_((lp - lm) / (up - down))
                continue
            g = []
            for i, orig in enumerate(values):
                h = h0 * max(1.0, abs(orig))
                up, down = float(stored(orig + h)), float(stored(orig - h))
                flat[i] = up
                lp = loss_at()
                flat[i] = down
                lm = loss_at()
                flat[i] = orig
                g.append((lp - lm) / (up - down))
            buf.view(-1).copy_(torch.tensor(g, dtype=p.dtype))
        return loss, grads

    if any(p.requires_grad for p in plist):  # perturbing a leaf that requires grad needs no_grad
        return torch.no_grad()(step)
    return step


# What each method needs of the parameters: a graph (they require grad), torch tensors.
analytic.needs_graph, analytic.on_numpy = False, True  # the same formulas run on NumPy arrays
autograd.needs_graph, autograd.on_numpy = True, False
finite_difference.needs_graph, finite_difference.on_numpy = False, False

# Option name -> the gradient method it builds.
METHODS = {"analytic": analytic, "autograd": autograd, "finite_difference": finite_difference}


def build(cfg, problem: Problem, params: dict) -> GradFn:
    return METHODS[cfg.name](problem, params, cfg)
