"""Classic test functions for optimizers, written as gradlab's model=objective takes them: a
function of a 1-D tensor theta returning a scalar tensor, built from torch operations so that
autograd (and vmap, which trains a whole sweep as one program) can go through it.

    gradlab model=objective data=none model.target=examples/test_functions.py:beale \
        model.start=[1,1] model.optimum=[3,0.5] optimizer=adam optimizer.lr=0.01

Copy this file and write your own beside it; the recipes in conf/experiment/ use these.
"""

import math

import torch


def beale(theta):
    """Flat plateaus and sharp ridges; minimum 0 at (3, 0.5)."""
    x, y = theta[0], theta[1]
    return (1.5 - x + x * y) ** 2 + (2.25 - x + x * y**2) ** 2 + (2.625 - x + x * y**3) ** 2


def himmelblau(theta):
    """Four minima of value 0: (3, 2), (−2.805118, 3.131312), (−3.779310, −3.283186), (3.584428, −1.848126)."""
    x, y = theta[0], theta[1]
    return (x**2 + y - 11) ** 2 + (x + y**2 - 7) ** 2


def rastrigin(theta):
    """A bowl under a grid of local minima (any dimension); the global minimum 0 at the origin."""
    return 10 * theta.shape[0] + (theta**2 - 10 * torch.cos(2 * math.pi * theta)).sum()


def booth(theta):
    """A plain quadratic valley; minimum 0 at (1, 3)."""
    x, y = theta[0], theta[1]
    return (x + 2 * y - 7) ** 2 + (2 * x + y - 5) ** 2


def ill_conditioned(theta):
    """½(x² + 100·y²): curvatures 1 and 100 (condition number 100), minimum 0 at (0, 0). Plain
    gradient descent must keep lr < 2/100 for y, and then crawls along x."""
    x, y = theta[0], theta[1]
    return 0.5 * (x**2 + 100 * y**2)


def saddle(theta):
    """x² + y⁴/4 − y²/2: a saddle point at (0, 0) between two minima of value −1/4 at (0, ±1).
    Started on the ridge's line (y near 0), an optimizer must find its way off the saddle."""
    x, y = theta[0], theta[1]
    return x**2 + y**4 / 4 - y**2 / 2
