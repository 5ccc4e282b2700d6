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


def gradlab_fit(configs: int, epochs: int) -> dict:
    """gradlab's training.fit over `configs` configurations (learning rates 1e-4 to 1e-1, one seed
    each, from w = 1, b = 0), the hand-derived gradient, recording the first and last epochs only:
    its seconds, how many completed, its training data and each configuration's final (w, b)."""
    from dataclasses import replace

    from gradlab import training
    from gradlab.api import compose

    base, _ = compose(["grad=analytic", "optimizer=gd", "data.scaling=factor", f"train.epochs={epochs}",
                       f"train.log_every={epochs}", "model.start.w=[1.0]", "model.start.b=0.0"])
    cfgs = [replace(base, optimizer=replace(base.optimizer, lr=float(lr)), train=replace(base.train, seed=i))
            for i, lr in enumerate(rates(configs))]
    s = training.setup(*cfgs)
    histories = training.new_histories(s)
    start = time.perf_counter()
    finals = training.fit(s, histories)
    seconds = time.perf_counter() - start
    x, y = s.problem.train
    return {"seconds": seconds, "completed": [h.outcome == "completed" for h in histories],
            "data": (x[0, :, 0].tolist(), y[0, :, 0].tolist()),
            "finals": [(float(f["w"].ravel()[0]), float(f["b"].ravel()[0])) for f in finals]}


def rates(configs: int):
    import numpy as np

    return np.logspace(-4, -1, configs)


def contiguous(configs: int, epochs: int, data: tuple[list, list]) -> tuple[float, list[tuple[float, float]]]:
    """The same descent written bare: w and b (B,) from 1 and 0, predictions (n, B) with the
    configurations on the contiguous axis, each epoch's loss computed as gradlab's loop computes it;
    its seconds and each configuration's final (w, b)."""
    import torch

    x = torch.tensor(data[0], dtype=torch.float32)[:, None]
    y = torch.tensor(data[1], dtype=torch.float32)[:, None]
    lr = torch.tensor(rates(configs), dtype=torch.float32)
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
    return time.perf_counter() - start, list(zip(w.tolist(), b.tolist()))


def measure(quick: bool) -> dict:
    configs, epochs = (1000, 300) if quick else (10_000, 3000)
    ours = gradlab_fit(configs, epochs)
    bare, _ = contiguous(configs, epochs, ours["data"])
    return {"configs": configs, "epochs": epochs, "gradlab_seconds": ours["seconds"], "contiguous_seconds": bare,
            "ratio": ours["seconds"] / bare, "completed": sum(ours["completed"]), "train_rows": len(ours["data"][0])}
