"""The losses beyond the squared errors (models.squared_error): l1, huber, bce, each the mean
over a configuration's samples of torch's own elementwise formula, and its derivative by the
prediction (what a hand-derived gradient's chain rule starts from).

On torch tensors the value is torch.nn.functional's (reduction="none", then the mean), so that a
run equals the user's loop with torch's loss to the last bits the mean allows; on NumPy arrays
(device=numpy) the same formulas are written out. The derivatives are those torch's backward
computes, so the hand-derived gradient agrees with autograd.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from gradlab.options import Loss

SAMPLES = (1, 2)  # the axes of predictions (B, n, 1) that a loss reduces, per configuration
BCE_LOG_FLOOR = -100.0  # torch clamps each log of binary_cross_entropy here: a saturated prediction costs 100, not inf
BCE_EPS = 1e-12  # torch's floor on p·(1 − p) in binary_cross_entropy's derivative


class SampleLoss:
    """A loss other than the squared errors, each configuration's (B,) of predictions and targets
    (B, n, 1): one of torch's below, or the user's own (`user`, already batched: train.loss=module)."""

    def __init__(self, kind: Loss, delta: float = 1.0, user=None):
        self.kind, self.delta, self.user = kind, delta, user

    def value(self, pred, y):
        if self.user is not None:
            return self.user(pred, y)
        return sample_loss(self.kind, pred, y, self.delta)

    def grad(self, pred, y):
        return sample_loss_grad(self.kind, pred, y, self.delta)


def _elementwise(kind: Loss, pred, y, delta: float):
    if isinstance(pred, torch.Tensor):
        if kind is Loss.l1:
            return F.l1_loss(pred, y, reduction="none")
        if kind is Loss.huber:
            return F.huber_loss(pred, y, reduction="none", delta=delta)
        if kind is Loss.bce:
            return F.binary_cross_entropy(pred, y, reduction="none")
    else:
        err = pred - y
        if kind is Loss.l1:
            return np.abs(err)
        if kind is Loss.huber:
            a = np.abs(err)
            return np.where(a < delta, 0.5 * err * err, delta * (a - 0.5 * delta))
        if kind is Loss.bce:
            with np.errstate(divide="ignore"):
                return -(y * np.maximum(np.log(pred), BCE_LOG_FLOOR) + (1 - y) * np.maximum(np.log(1 - pred), BCE_LOG_FLOOR))
    raise ValueError(f"{kind} has no formula here: models.squared_error or the user's loss computes it")


def sample_loss(kind: Loss, pred, y, delta: float):
    """Each configuration's mean loss (B,) of predictions and targets (B, n, 1)."""
    return _elementwise(kind, pred, y, delta).mean(SAMPLES)


def sample_loss_grad(kind: Loss, pred, y, delta: float):
    """∂sample_loss/∂prediction (B, n, 1), as torch's backward computes it."""
    n = pred.shape[1]
    err = pred - y
    tensor = isinstance(pred, torch.Tensor)
    if kind is Loss.l1:
        g = torch.sign(err) if tensor else np.sign(err)
    elif kind is Loss.huber:
        g = err.clamp(-delta, delta) if tensor else np.clip(err, -delta, delta)
    elif kind is Loss.bce:
        spread = (1 - pred) * pred
        g = err / (spread.clamp(min=BCE_EPS) if tensor else np.maximum(spread, BCE_EPS))
    else:
        raise ValueError(f"{kind} is a squared error: models.squared_error_grad computes it")
    return g / n
