"""Issue 20's targets for a user's own nn.Module (`model=module`), measured side by side:

1. a batch of 64 configurations of examples/tiny_net.py's TinyNet (2 inputs -> 32 tanh -> 1) on
   a 1,000-row CSV, 500 epochs, Adam, 64 learning rates, through the batched launcher, against
   the same 64 jobs through `hydra/launcher=basic`: whole processes, everything recorded, fresh
   stores, alternating which goes first;
2. its inner loop (gradlab's fit of the 64-configuration batch) against the same loop written by
   hand with torch.func: vmap(grad_and_value(functional_call)) and the same batched Adam update
   (torch.optim.Adam's equations, one learning rate per configuration).

`--quick` uses tiny sizes (a smoke run; the targets apply to the full sizes).
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[3]
TARGETS = {"usermodule_launcher_speedup_min": 8.0, "usermodule_inner_loop_ratio_max": 1.5}
TARGET = "examples/tiny_net.py:TinyNet"


def sizes(quick: bool) -> dict:
    return {"configs": 4, "rows": 100, "epochs": 50, "hidden": 32} if quick else \
           {"configs": 64, "rows": 1000, "epochs": 500, "hidden": 32}


def dataset(tmp: Path, rows: int) -> Path:
    """rows of (x1, x2, y), y a smooth function of both plus noise, seeded."""
    rng = np.random.default_rng(20)
    x = rng.uniform(-2, 2, (rows, 2))
    y = np.sin(x[:, 0]) + 0.5 * x[:, 1] ** 2 + 0.1 * rng.normal(size=rows)
    path = tmp / "usermodule.csv"
    np.savetxt(path, np.column_stack([x, y]), delimiter=",", header="x1,x2,y", comments="", fmt="%.8f")
    return path


def learning_rates(n: int) -> list[float]:
    return [float(f"{v:.6g}") for v in np.geomspace(1e-4, 1e-1, n)]


def overrides(csv: Path, z: dict) -> list[str]:
    """The 64 jobs' config, as a user would type it (the learning rates as one sweep)."""
    return ["model=module", f"model.target={TARGET}", "+model.args.inputs=2", f"+model.args.hidden={z['hidden']}",
            "data=csv", f"data.path={csv}", "data.target=y", "optimizer=adam", f"train.epochs={z['epochs']}",
            "tracking.experiment=usermodule"]


def launchers(tmp: Path, csv: Path, z: dict, reps: int, timed) -> dict:
    """The batch through the batched launcher against the basic one, whole processes, fresh stores."""
    lrs = "optimizer.lr=" + ",".join(str(v) for v in learning_rates(z["configs"]))
    cmd = [sys.executable, "-m", "gradlab", "-m", *overrides(csv, z), lrs]
    samples: dict[str, list[float]] = {"batched": [], "basic": []}
    for rep in range(reps):
        order = ("batched", "basic") if rep % 2 == 0 else ("basic", "batched")
        for launcher in order:
            d = tmp / f"usermodule-{launcher}-{rep}"
            samples[launcher].append(timed([*cmd, f"hydra/launcher={launcher}", f"hydra.sweep.dir={d}/ms"],
                                           {"MLFLOW_TRACKING_URI": f"sqlite:///{d / 'mlflow.db'}"})[0])
    recorded = _recorded(f"sqlite:///{tmp / 'usermodule-batched-0' / 'mlflow.db'}")
    b, s = statistics.median(samples["batched"]), statistics.median(samples["basic"])
    return {"jobs": z["configs"], "batched_seconds": b, "basic_seconds": s, "speedup": s / b, "children_finished": recorded,
            "batched_all": [round(x, 2) for x in samples["batched"]], "basic_all": [round(x, 2) for x in samples["basic"]]}


def _recorded(uri: str) -> int:
    """Children of the batched sweep recorded FINISHED, each with its history.csv and figures."""
    from gradlab.tracking import Store, query

    store = Store(uri)
    parent = query.latest_sweep(store, "usermodule")
    kids = query.children(store, parent.id)
    done = [k for k in kids if k.status == "FINISHED"]
    assert all({"history.csv", "config.yaml"} <= set(query.artifact_paths(store, k.id)) for k in done[:3])
    return len(done)


def inner(csv: Path, z: dict, reps: int) -> dict:
    """gradlab's fit of the batch against the torch.func loop written by hand, alternating."""
    import torch

    from gradlab import training
    from gradlab.bench.drive import fit_seconds

    cfgs = _configs(csv, z)

    def ours() -> float:
        return fit_seconds(training.setup(*cfgs), z["epochs"])

    x, y = _data(csv)
    lrs = torch.tensor(learning_rates(z["configs"]))
    ours(), hand(x, y, lrs, z, 5)  # warm up: first calls pay one-off costs
    mine, theirs = [], []
    for rep in range(reps):
        pair = [(mine, ours), (theirs, lambda: hand(x, y, lrs, z, z["epochs"])[0])]
        for samples, fn in (pair if rep % 2 == 0 else pair[::-1]):
            samples.append(fn())
    a, b = statistics.median(mine), statistics.median(theirs)
    return {"configs": z["configs"], "epochs": z["epochs"], "repetitions": reps, "gradlab_seconds": a, "hand_seconds": b,
            "ratio": a / b, "threads": torch.get_num_threads()}


def _configs(csv: Path, z: dict) -> list:
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from gradlab.config import register_configs

    register_configs()
    out = []
    for lr in learning_rates(z["configs"]):
        with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
            out.append(OmegaConf.to_object(compose("config", overrides=[*overrides(csv, z), f"optimizer.lr={lr}"])))
    return out


def _data(csv: Path):
    import torch

    table = np.loadtxt(csv, delimiter=",", skiprows=1)
    return torch.tensor(table[:, :2], dtype=torch.float32), torch.tensor(table[:, 2], dtype=torch.float32)


def hand(x, y, lrs, z: dict, epochs: int) -> tuple[float, dict]:
    """The loop a torch.func user writes: the module made under torch.manual_seed (as gradlab
    makes it), its parameters stacked once per configuration, vmap(grad_and_value) of the MSE of
    functional_call, torch.optim.Adam's update (defaults: betas 0.9, 0.999, eps 1e-8) with a
    learning rate per configuration, the loss kept each epoch. Returns its seconds and the final
    parameters (configuration axis first)."""
    import torch
    from torch.func import functional_call, grad_and_value, vmap

    sys.path.insert(0, str(ROOT / "examples"))
    from tiny_net import TinyNet

    torch.manual_seed(0)
    net = TinyNet(inputs=2, hidden=z["hidden"])
    n = len(lrs)
    params = {k: v.detach().unsqueeze(0).repeat(n, *([1] * v.dim())).contiguous() for k, v in net.named_parameters()}

    def loss(p, x, y):
        return ((functional_call(net, p, (x,)).squeeze(-1) - y) ** 2).mean()

    step = vmap(grad_and_value(loss), in_dims=(0, None, None))
    m = {k: torch.zeros_like(v) for k, v in params.items()}
    v2 = {k: torch.zeros_like(v) for k, v in params.items()}
    b1, b2, eps = 0.9, 0.999, 1e-8
    shaped = {k: lrs.view(n, *([1] * (p.dim() - 1))) for k, p in params.items()}
    losses = []
    start = time.perf_counter()
    for t in range(1, epochs + 1):
        grads, value = step(params, x, y)
        losses.append(value)
        c1, c2 = 1 - b1 ** t, 1 - b2 ** t
        for k, p in params.items():
            g = grads[k]
            m[k].mul_(b1).add_(g, alpha=1 - b1)
            v2[k].mul_(b2).addcmul_(g, g, value=1 - b2)
            p.sub_(shaped[k] / c1 * m[k] / (v2[k].sqrt() / c2 ** 0.5 + eps))
    torch.stack(losses)
    return time.perf_counter() - start, params


def run(tmp: Path, quick: bool, reps: int, timed) -> dict:
    z = sizes(quick)
    csv = dataset(tmp, z["rows"])
    return {"sizes": z, "launchers": launchers(tmp, csv, z, max(1, min(reps, 3)), timed), "inner_loop": inner(csv, z, reps)}


def verdicts(r: dict) -> dict:
    u = r["usermodule"]
    return {"user module: batched >= 8x the basic launcher (64 configs)": u["launchers"]["speedup"] >= 8.0
            and u["launchers"]["children_finished"] == u["sizes"]["configs"],
            "user module: inner loop <= 1.5x torch.func by hand": u["inner_loop"]["ratio"] <= 1.5}


def lines(r: dict) -> list[str]:
    u = r["usermodule"]
    z, la, il = u["sizes"], u["launchers"], u["inner_loop"]
    return [f"8. a user's nn.Module (model=module, {TARGET}: 2 -> {z['hidden']} tanh -> 1), {z['configs']} learning rates, "
            f"Adam, {z['rows']} rows, {z['epochs']} epochs:",
            f"   batched launcher {la['batched_seconds']:.1f} s   basic launcher {la['basic_seconds']:.1f} s   "
            f"{la['speedup']:.1f}x faster (target >= 8); {la['children_finished']} of {la['jobs']} children FINISHED",
            f"   inner loop: gradlab {il['gradlab_seconds']:.3f} s   torch.func by hand {il['hand_seconds']:.3f} s   "
            f"ratio {il['ratio']:.2f}x (target <= 1.5; medians of {il['repetitions']})", ""]
