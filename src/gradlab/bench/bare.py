"""The bare single run of the benchmark: the loop of the thermometer_sgd_split recipe (inputs
×0.1, 2 of 11 samples held out, torch.optim.SGD lr 1e-2), with the same torch imports and no
Hydra, no MLflow, nothing recorded but the losses in a list, as the classic loops keep them."""

import json
import os
import sys
import time

import torch

T_U = [35.7, 55.9, 58.2, 81.9, 56.3, 48.9, 33.9, 21.8, 48.4, 60.4, 68.4]
T_C = [0.5, 14.0, 15.0, 28.0, 11.0, 8.0, 3.0, -4.0, 6.0, 13.0, 21.0]


def main(epochs: int) -> None:
    imported = time.time()
    t_u, t_c = torch.tensor(T_U), torch.tensor(T_C)
    n_val = int(0.2 * len(T_U))
    perm = torch.randperm(len(T_U), generator=torch.Generator().manual_seed(0))
    tr, va = perm[:-n_val], perm[-n_val:]
    x_tr, y_tr, x_va, y_va = 0.1 * t_u[tr], t_c[tr], 0.1 * t_u[va], t_c[va]
    params = torch.tensor([1.0, 0.0], requires_grad=True)
    optimizer = torch.optim.SGD([params], lr=1e-2)
    losses = []
    for _ in range(epochs):
        loss = ((params[0] * x_tr + params[1] - y_tr) ** 2).mean()
        with torch.no_grad():
            val = ((params[0] * x_va + params[1] - y_va) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append((loss.item(), val.item()))
    trained = time.time()
    print(f"params {params.tolist()}, last losses {losses[-1]}")
    if os.environ.get("GRADLAB_TIMINGS"):
        import resource

        with open(os.environ["GRADLAB_TIMINGS"], "w") as f:
            json.dump({"stamps": {"imported": imported, "trained": trained},
                       "peak_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}, f)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5000)
