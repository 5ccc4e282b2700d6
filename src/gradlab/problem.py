"""A problem is what gradient descent minimises: a model, a loss and the data, on one backend.

The backend is a torch device and dtype, or NumPy arrays (`device=numpy`). Data live on the
backend once; batches are slices of it, or fresh draws for a stream.
"""

from __future__ import annotations

import torch

from gradlab.data import Prepared, Stream
from gradlab.devices import Backend
from gradlab.options import Loss
from gradlab.models import REDUCTIONS, Model, squared_error, squared_error_grad


class Problem:
    """loss(params, batch) and its hand-derived gradient; the batches of one epoch."""

    def __init__(self, model: Model, loss: Loss, backend: Backend, data: Prepared | Stream | None,
                 batch_size: int | None, shuffle: bool, gen: torch.Generator):
        self.model, self.backend, self.gen = model, backend, gen
        self.batch_size, self.shuffle = batch_size, shuffle
        # The reduction, resolved once: looking an Enum up costs a Python-level __hash__ per call.
        self.mean, self.factor = REDUCTIONS[loss]
        self.stream = data if isinstance(data, Stream) else None
        self.train = self.val = None
        if isinstance(data, Prepared):
            self.train = (backend.put(data.x_train), backend.put(data.y_train))
            if data.x_val is not None:
                self.val = (backend.put(data.x_val), backend.put(data.y_val))
        n = len(self.train[1]) if self.train is not None else 0
        bs = n if batch_size is None or self.train is None else min(batch_size, n)
        self.n_train = n
        # Unshuffled epochs reuse the same slices; full batch is one slice of everything.
        self._fixed = [self.train] if bs == n else [
            (self.train[0][i:i + bs], self.train[1][i:i + bs]) for i in range(0, n, bs)
        ] if self.train is not None else [None]
        self._bs = bs

    # One epoch's batches. The run generator decides shuffles and streamed draws, in order.
    def batches(self):
        if self.stream is not None:
            x, y = self.stream.sample(self.batch_size or 1, self.gen)
            return [(self.backend.put(x), self.backend.put(y))]
        if not self.shuffle or self.train is None:
            return self._fixed
        perm = torch.randperm(self.n_train, generator=self.gen)
        if self.backend.numpy:
            perm = perm.numpy()
        elif self.backend.device != "cpu":
            perm = perm.to(self.backend.device)
        x, y = self.train
        return [(x[idx], y[idx]) for idx in (perm[i:i + self._bs] for i in range(0, self.n_train, self._bs))]

    def loss(self, p, batch):
        if self.model.objective:
            return self.model.value(p)
        x, y = batch
        return squared_error(self.model.forward(p, x) - y, self.mean, self.factor)

    def analytic(self, p, batch):
        """(loss, gradients by name) from the hand-derived formulas."""
        if self.model.objective:
            return self.model.value(p), self.model.gradient(p)
        x, y = batch
        err = self.model.forward(p, x) - y
        return (squared_error(err, self.mean, self.factor),
                self.model.backward(p, x, squared_error_grad(err, self.mean, self.factor)))
