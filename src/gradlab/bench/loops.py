"""The inner loops of the benchmark written bare: gradient descent on the thermometer (inputs
×0.1, lr 1e-2, mean squared error), one function per gradient method and for NumPy, each keeping
the loss of every epoch as a float, as the classic loops print it. No gradlab code is used."""

import numpy as np
import torch

T_U = [35.7, 55.9, 58.2, 81.9, 56.3, 48.9, 33.9, 21.8, 48.4, 60.4, 68.4]
T_C = [0.5, 14.0, 15.0, 28.0, 11.0, 8.0, 3.0, -4.0, 6.0, 13.0, 21.0]
LR = 1e-2


def _data():
    return 0.1 * torch.tensor(T_U), torch.tensor(T_C)


def _hand_derived(x, y, w, b, epochs: int) -> list[float]:
    """The analytic loop; the same lines run on torch tensors and on NumPy arrays."""
    losses = []
    for _ in range(epochs):
        err = w * x + b - y
        losses.append(float((err * err).mean()))
        dloss = 2 * err / len(x)
        w = w - LR * (dloss * x).sum()
        b = b - LR * dloss.sum()
    return losses


def analytic(epochs: int) -> list[float]:
    x, y = _data()
    return _hand_derived(x, y, torch.tensor(1.0), torch.tensor(0.0), epochs)


def autograd(epochs: int) -> list[float]:
    x, y = _data()
    w, b = torch.tensor(1.0, requires_grad=True), torch.tensor(0.0, requires_grad=True)
    losses = []
    for _ in range(epochs):
        loss = ((w * x + b - y) ** 2).mean()
        w.grad = b.grad = None
        loss.backward()
        with torch.no_grad():
            w -= LR * w.grad
            b -= LR * b.grad
        losses.append(float(loss.detach()))
    return losses


def finite_difference(epochs: int) -> list[float]:
    x, y = _data()
    params = [torch.tensor(1.0), torch.tensor(0.0)]
    h0 = torch.finfo(torch.float32).eps ** (1 / 3)

    def loss_of():
        return ((params[0] * x + params[1] - y) ** 2).mean()

    losses = []
    for _ in range(epochs):
        losses.append(float(loss_of()))
        grads = []
        for p in params:
            orig = float(p)
            h = h0 * max(1.0, abs(orig))
            p.fill_(orig + h)
            up = float(loss_of())
            p.fill_(orig - h)
            down = float(loss_of())
            p.fill_(orig)
            grads.append((up - down) / (2 * h))
        for p, g in zip(params, grads):
            p.sub_(LR * g)
    return losses


def numpy(epochs: int) -> list[float]:
    x = 0.1 * np.array(T_U, dtype=np.float32)
    y = np.array(T_C, dtype=np.float32)
    return _hand_derived(x, y, np.float32(1.0), np.float32(0.0), epochs)


LOOPS = {"analytic": analytic, "autograd": autograd, "finite_difference": finite_difference, "numpy": numpy}
