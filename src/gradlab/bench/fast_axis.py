"""`make bench`, scale: training thousands of configurations at once, gradlab's engine against
the same gradient descent written bare with the configurations on the contiguous axis.

The issue's peer measurement: 10,000 thermometer configurations × 3,000 epochs in 8 s with the
configurations on the contiguous axis (27 s on the leading axis). gradlab keeps them on the
leading axis (a parameter is (B, d, 1), a forward pass one batched product); this measures both
side by side on the same data (the thermometer, inputs ×0.1, its training split), full batch,
plain gradient descent, a learning rate per configuration, float32.
"""

from __future__ import annotations

import time


def gradlab_seconds(configs: int, epochs: int) -> dict:
    """gradlab's training.fit over `configs` configurations (learning rates 1e-4 to 1e-1, one seed
    each), the hand-derived gradient, recording the first and last epochs only."""
    from dataclasses import replace

    import numpy as np

    from gradlab import training
    from gradlab.api import compose

    base, _ = compose(["grad=analytic", "optimizer=gd", "data.scaling=factor", f"train.epochs={epochs}",
             f"train.log_every={epochs}"])
    rates = np.logspace(-4, -1, configs)
    cfgs = [replace(base, optimizer=replace(base.optimizer, lr=float(lr)), train=replace(base.train, seed=i))
            for i, lr in enumerate(rates)]
    s = training.setup(*cfgs)
    histories = training.new_histories(s)
    start = time.perf_counter()
    training.fit(s, histories)
    seconds = time.perf_counter() - start
    x, y = s.problem.train
    return {"seconds": seconds, "completed": sum(h.outcome == "completed" for h in histories),
            "rows": int(x.shape[1]), "data": (x[0, :, 0].tolist(), y[0, :, 0].tolist())}


def contiguous_seconds(configs: int, epochs: int, data: tuple[list, list]) -> float:
    """The same descent written bare: w and b (B,), predictions (n, B) with the configurations on
    the contiguous axis, each epoch's loss computed as gradlab's loop computes it."""
    import numpy as np
    import torch

    x = torch.tensor(data[0], dtype=torch.float32)[:, None]
    y = torch.tensor(data[1], dtype=torch.float32)[:, None]
    lr = torch.tensor(np.logspace(-4, -1, configs), dtype=torch.float32)
    w, b = torch.ones(configs), torch.zeros(configs)
    n = float(len(x))
    start = time.perf_counter()
    for _ in range(epochs):
        err = x * w + b - y  # (n, B)
        loss = (err * err).sum(0) / n
        g = err * (2.0 / n)
        w = w - lr * (g * x).sum(0)
        b = b - lr * g.sum(0)
    torch.isfinite(loss).all().item()
    return time.perf_counter() - start


def measure(quick: bool) -> dict:
    configs, epochs = (1000, 300) if quick else (10_000, 3000)
    ours = gradlab_seconds(configs, epochs)
    bare = contiguous_seconds(configs, epochs, ours.pop("data"))
    return {"configs": configs, "epochs": epochs, "gradlab_seconds": ours["seconds"], "contiguous_seconds": bare,
            "ratio": ours["seconds"] / bare, "completed": ours["completed"], "train_rows": ours["rows"]}
