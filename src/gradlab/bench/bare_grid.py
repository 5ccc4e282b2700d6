"""The 12 loops of sweeps/bench_grid.yaml written bare and run one after another in one process:
the thermometer (2 of 11 held out), inputs ×0.1 or standardized, torch.optim.SGD and Adam at three
learning rates, autograd, each loss kept in a list as the classic loops keep them. No Hydra, no
MLflow, nothing recorded: what the batched sweep's whole run is measured against."""

import sys

import torch

T_U = [35.7, 55.9, 58.2, 81.9, 56.3, 48.9, 33.9, 21.8, 48.4, 60.4, 68.4]
T_C = [0.5, 14.0, 15.0, 28.0, 11.0, 8.0, 3.0, -4.0, 6.0, 13.0, 21.0]


def loop(optimizer: str, lr: float, scaling: str, epochs: int) -> list:
    t_u, t_c = torch.tensor(T_U), torch.tensor(T_C)
    perm = torch.randperm(11, generator=torch.Generator().manual_seed(0))
    tr, va = perm[:-2], perm[-2:]
    x = 0.1 * t_u if scaling == "factor" else (t_u - t_u[tr].mean()) / t_u[tr].std(unbiased=False)
    params = torch.tensor([1.0, 0.0], requires_grad=True)
    opt = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam}[optimizer]([params], lr=lr)
    losses = []
    for _ in range(epochs):
        loss = ((params[0] * x[tr] + params[1] - t_c[tr]) ** 2).mean()
        with torch.no_grad():
            val = ((params[0] * x[va] + params[1] - t_c[va]) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append((loss.item(), val.item()))
    return losses


def main(epochs: int) -> None:
    for optimizer in ("sgd", "adam"):
        for lr in (1e-3, 3e-3, 1e-2):
            for scaling in ("factor", "standardize"):
                losses = loop(optimizer, lr, scaling, epochs)
    print(f"12 loops done; last losses {losses[-1]}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5000)
