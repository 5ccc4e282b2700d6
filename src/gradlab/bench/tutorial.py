"""The pattern of the tutorials, for the benchmark to compare against (deliberately not gradlab's
way): one @hydra.main script, MLflow's fluent API, `mlflow.log_metric` for each loss every epoch,
a matplotlib figure per run, Hydra's basic launcher for the sweep."""

import hydra
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import mlflow  # noqa: E402
import torch  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

T_U = [35.7, 55.9, 58.2, 81.9, 56.3, 48.9, 33.9, 21.8, 48.4, 60.4, 68.4]
T_C = [0.5, 14.0, 15.0, 28.0, 11.0, 8.0, 3.0, -4.0, 6.0, 13.0, 21.0]


@hydra.main(version_base="1.3", config_path=".", config_name="tutorial")
def main(cfg: DictConfig) -> float:
    mlflow.set_experiment("tutorial")
    with mlflow.start_run():
        mlflow.log_params(OmegaConf.to_container(cfg))
        t_u, t_c = torch.tensor(T_U), torch.tensor(T_C)
        perm = torch.randperm(11, generator=torch.Generator().manual_seed(0))
        tr, va = perm[:-2], perm[-2:]
        if cfg.scaling == "factor":
            x = 0.1 * t_u
        else:
            x = (t_u - t_u[tr].mean()) / t_u[tr].std(unbiased=False)
        params = torch.tensor([1.0, 0.0], requires_grad=True)
        optimizer = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam}[cfg.optimizer]([params], lr=cfg.lr)
        for epoch in range(1, cfg.epochs + 1):
            loss = ((params[0] * x[tr] + params[1] - t_c[tr]) ** 2).mean()
            with torch.no_grad():
                val = ((params[0] * x[va] + params[1] - t_c[va]) ** 2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            mlflow.log_metric("train_loss", loss.item(), step=epoch)
            mlflow.log_metric("val_loss", val.item(), step=epoch)
        fig, ax = plt.subplots()
        ax.scatter(t_u, t_c)
        with torch.no_grad():
            ax.plot(t_u, params[0] * x + params[1])
        mlflow.log_figure(fig, "fit.png")
        plt.close(fig)
        mlflow.log_metric("final_val_loss", val.item())
    return val.item()


if __name__ == "__main__":
    main()
