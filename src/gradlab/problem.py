"""A problem is what gradient descent minimises: a model, a loss and the data, on one backend,
for a batch of B configurations at once.

Each configuration has its own data (its own scaling and split: x (B, n, d), y (B, n, 1)), its
own generator (shuffles, streamed draws) and its own parameters; the loss is one value per
configuration (B,). Data live on the backend once; batches are slices of it, or fresh draws for
a stream. `keep` restricts the problem to the configurations still training.
"""

from __future__ import annotations

import torch

from gradlab.data import Stream
from gradlab.devices import Backend, index
from gradlab.losses import SampleLoss
from gradlab.models import REDUCTIONS, Model, squared_error, squared_error_grad
from gradlab.options import Loss

Batch = tuple | None  # (x (B, m, d), y (B, m, 1)), or None for an objective function


class Problem:
    def __init__(self, model: Model, loss: Loss, backend: Backend, gens: list[torch.Generator],
                 train: tuple | None = None, val: tuple | None = None, stream: Stream | None = None,
                 batch_size: int | None = None, shuffle: bool = False, sample: SampleLoss | None = None):
        """`train` and `val`: (x, y) float64 CPU tensors (B, n, d) and (B, n); `stream`: a fresh
        batch of `batch_size` per step for each configuration, drawn from its generator."""
        self.model, self.loss_kind, self.backend, self.gens = model, loss, backend, gens
        self.batch_size, self.shuffle, self.stream = batch_size, shuffle, stream
        self.sample = sample or SampleLoss(loss)  # the loss where it is not a squared error
        # The reduction, resolved once: looking an Enum up costs a Python-level __hash__ per call.
        # Losses other than squared errors (losses.py) are means: their minibatches weigh by size.
        self.squared = loss in REDUCTIONS
        self.mean, self.factor = REDUCTIONS.get(loss, (True, 1.0))
        self.train = self._put(train)
        self.val = self._put(val)
        self.configs = len(gens)
        self.n_train = 0 if train is None else train[1].shape[1]
        bs = self.n_train if batch_size is None else min(batch_size, self.n_train)
        self._bs = bs
        # Unshuffled epochs reuse the same slices; full batch is one slice of everything.
        if self.train is None:
            self._fixed = [None]
        elif bs == self.n_train:
            self._fixed = [self.train]
        else:
            self._fixed = [(self.train[0][:, i:i + bs], self.train[1][:, i:i + bs]) for i in range(0, self.n_train, bs)]

    def _put(self, data):
        if data is None:
            return None
        x, y = data
        return self.backend.put(x), self.backend.put(y[:, :, None] if y.dim() == 2 else y)

    def keep(self, positions: list[int]) -> "Problem":
        """The same problem for the configurations at `positions` only."""
        idx = index(positions)

        def cut(data):
            return None if data is None else tuple(self._cpu(t)[idx] for t in data)

        return Problem(self.model, self.loss_kind, self.backend, [self.gens[i] for i in positions], cut(self.train),
                       cut(self.val), self.stream, self.batch_size, self.shuffle, self.sample)

    def _cpu(self, t) -> torch.Tensor:
        return torch.from_numpy(t).double() if self.backend.numpy else t.detach().cpu().double()

    # One epoch's batches. Each configuration's generator decides its shuffles and draws, in order.
    def batches(self) -> list[Batch]:
        if self.stream is not None:
            draws = [self.stream.sample(self.batch_size or 1, g) for g in self.gens]
            return [self._put((torch.stack([x for x, _ in draws]), torch.stack([y for _, y in draws])))]
        if not self.shuffle or self.train is None:
            return self._fixed
        perm = torch.stack([torch.randperm(self.n_train, generator=g) for g in self.gens])
        rows = torch.arange(self.configs)[:, None]
        if self.backend.numpy:
            perm, rows = perm.numpy(), rows.numpy()
        elif self.backend.device != "cpu":
            perm, rows = perm.to(self.backend.device), rows.to(self.backend.device)
        x, y = self.train
        return [(x[rows, p], y[rows, p]) for p in (perm[:, i:i + self._bs] for i in range(0, self.n_train, self._bs))]

    def loss(self, p: dict, batch: Batch):
        """Each configuration's loss (B,)."""
        if self.model.objective:
            return self.model.value(p)
        x, y = batch
        if not self.squared:
            return self.sample.value(self.model.forward(p, x), y)
        return squared_error(self.model.forward(p, x) - y, self.mean, self.factor)

    def analytic(self, p: dict, batch: Batch):
        """(loss (B,), gradients by name) from the hand-derived formulas."""
        if self.model.objective:
            return self.model.value(p), self.model.gradient(p)
        x, y = batch
        if not self.squared:
            pred = self.model.forward(p, x)
            return self.sample.value(pred, y), self.model.backward(p, x, self.sample.grad(pred, y))
        err = self.model.forward(p, x) - y
        return (squared_error(err, self.mean, self.factor),
                self.model.backward(p, x, squared_error_grad(err, self.mean, self.factor)))
