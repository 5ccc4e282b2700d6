"""How a run describes itself: its experiment, name and title, its provenance, its datasets.

No MLflow here: these are the values the tracking package writes.
"""

from __future__ import annotations

import enum
import functools
import getpass
import hashlib
import importlib.metadata
import os
import platform
import socket
import subprocess
import sys

from gradlab.config import Config, Scaling
from gradlab.tracking.processes import process_start
from gradlab.tracking.store import project_root

DEFAULT_EXPERIMENT = "default"


def experiment_name(explicit: str | None, recipe: str | None, sweep_file: str | None = None) -> str:
    """tracking.experiment, else the sweep file's name, else the recipe's, else "default"."""
    return explicit or sweep_file or recipe or DEFAULT_EXPERIMENT


def run_name(cfg: Config, overrides: list[str] | None = None, varied: list[str] | None = None) -> str:
    """Led by what tells the run apart, then its choices in full: a sweep's child by the values
    its sweep varies (`varied`, its keys), a single run by its command line's overrides, e.g.
    `adam lr=0.01 ×0.1 · thermometer-x0.1-linear-autograd-adam-lr0.01`. The UI cuts a name
    after some 15 characters: its start must differ."""
    if cfg.tracking.run_name:
        return cfg.tracking.run_name
    values = _override_values(overrides or [])
    if varied is not None:
        keys = [k for k in varied if k in values]
    else:
        keys = [k for k in values if not k.startswith(("tracking.", "hydra.", "hydra/")) and k != "experiment"]
    lead = list(dict.fromkeys(label(k, values[k], cfg) for k in keys))  # data.scaling and its factor: one label
    return " ".join(lead) + " · " + choices(cfg) if lead else choices(cfg)


def _override_values(overrides: list[str]) -> dict[str, str]:
    """key -> value of `key=value` overrides (a later one wins; `+`, `++` and `~` prefixes dropped)."""
    out = {}
    for o in overrides:
        key, sep, value = o.partition("=")
        if sep:
            out[key.lstrip("+~")] = value
    return out


def label(key: str, value: str, cfg: Config) -> str:
    """How one chosen value reads in a name: `adam`, `lr=0.01`, `×0.1`, `raw`, `seed=3`."""
    scaling = cfg.data.scaling
    if key == "data.scaling" or (key == "data.scale_factor" and scaling is Scaling.factor):
        return f"×{cfg.data.scale_factor:g}" if scaling is Scaling.factor else ("raw" if scaling is Scaling.none else scaling.value)
    if "." not in key:  # a group's option (optimizer=adam) or a sweep's own group
        return value
    short = {"optimizer.lr": "lr", "optimizer.momentum": "m", "train.batch_size": "bs"}.get(key, key.rpartition(".")[2])
    current = _lookup(cfg, key)
    if isinstance(current, enum.Enum):
        current = current.value
    return f"{short}={current:.6g}" if isinstance(current, float) else f"{short}={value if current is None else current}"


def _lookup(cfg, key: str):
    """A config's value at a dotted key, or None where there is none (a sweep's own key)."""
    node = cfg
    for part in key.split("."):
        node = getattr(node, part, None)
        if node is None:
            return None
    return node


def choices(cfg: Config) -> str:
    """The run's choices in a line: thermometer-x0.1-linear-autograd-sgd-lr0.01 (then the
    schedule, where there is one: ...-sgd-lr0.01-cosine)."""
    d = cfg.data
    data = [] if d.name == "none" else [d.name]
    if d.scaling is Scaling.factor:
        data.append(f"x{d.scale_factor:g}")
    elif d.scaling is not Scaling.none:
        data.append(d.scaling.value)
    opt = cfg.optimizer.name
    if getattr(cfg.optimizer, "momentum", 0):
        opt += f"-m{cfg.optimizer.momentum:g}"
    device = [] if cfg.device.name == "cpu" else [cfg.device.name]
    schedule = [] if cfg.schedule.name == "constant" else [cfg.schedule.name]
    extra = [f"bs{cfg.train.batch_size}"] if cfg.train.batch_size else []
    extra += [f"seed{cfg.train.seed}"] if cfg.train.seed else []
    lr = _lr(cfg).replace("=", "")
    return "-".join([*data, model_label(cfg), cfg.grad.name, *device, opt, lr, *schedule, *extra])


def model_label(cfg: Config) -> str:
    """The model as a name says it: the option, or for a user's own code the Name its
    model.target names (beale, TinyNet)."""
    target = getattr(cfg.model, "target", None)
    return target.rpartition(":")[2] if target else cfg.model.name


def _lr(cfg: Config) -> str:
    """lr=0.01; under onecycle, which sets the lr itself from its max_lr, max_lr=0.1."""
    if cfg.schedule.name == "onecycle":
        return f"max_lr={cfg.schedule.max_lr:g}"
    return f"lr={cfg.optimizer.lr:g}"


def title(cfg: Config) -> str:
    """A figure's title: the run in a line."""
    d, t = cfg.data, cfg.train
    scaling = {"none": "raw inputs", "factor": f"inputs ×{d.scale_factor:g}"}.get(d.scaling.value, f"{d.scaling.value}d inputs")
    data = "" if d.name == "none" else f"{d.name}, {scaling} · "
    batch = "full batch" if t.batch_size is None else f"batch {t.batch_size}"
    schedule = "" if cfg.schedule.name == "constant" else f", {cfg.schedule.name} schedule"
    return f"{data}{model_label(cfg)} · {cfg.grad.name} · {cfg.optimizer.name} {_lr(cfg)}{schedule} · {batch}"


# ----------------------------------------------------------------------- provenance
def _git(*args: str) -> str | None:
    try:
        r = subprocess.run(["git", "-C", str(project_root()), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout.strip() if r.returncode == 0 else None


def provenance() -> dict[str, str]:
    """Where and from what a run comes: user, git commit, host and process, package versions
    (the same for every run of a process: found once)."""
    return dict(_provenance(str(project_root()), os.getpid()))


@functools.lru_cache(maxsize=4)
def _provenance(root: str, pid: int) -> dict[str, str]:
    commit = _git("rev-parse", "HEAD")
    dirty = _git("status", "--porcelain", "--untracked-files=no") if commit else None
    tags = {
        "mlflow.user": getpass.getuser(),
        "mlflow.source.name": "gradlab",
        "mlflow.source.type": "LOCAL",
        "gradlab.git.commit": commit or "unknown",
        "gradlab.git.dirty": "unknown" if dirty is None else str(bool(dirty)).lower(),
        "gradlab.host": socket.gethostname(),
        "gradlab.pid": str(pid),
        "gradlab.pid_start": process_start(pid),
        "gradlab.command": " ".join(sys.argv),
        "gradlab.version.python": platform.python_version(),
    }
    if commit:
        tags["mlflow.source.git.commit"] = commit
    for pkg in ("gradlab", "torch", "hydra-core", "mlflow", "numpy"):
        try:
            tags[f"gradlab.version.{pkg}"] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            tags[f"gradlab.version.{pkg}"] = "unknown"
    return tags


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        import torch

        return f"{device} ({torch.cuda.get_device_name()})"
    return device


# ------------------------------------------------------------------------- datasets
def digest(*arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(a.tobytes())
    return h.hexdigest()[:32]  # MLflow keeps at most 36 characters


def datasets(prepared, data_name: str, flat: dict[str, str]) -> list[dict]:
    """The training and validation sets as MLflow inputs, with a digest of all of their values."""
    if prepared is None:
        return []
    origin = {f"gradlab.{k}": v for k, v in flat.items() if k.startswith("data.")}
    out = []
    for context, x, y in (("training", prepared.raw_train, prepared.y_train), ("validation", prepared.raw_val, prepared.y_val)):
        if x is None:
            continue
        xa, ya = x.numpy(), y.numpy()
        out.append({"name": f"{data_name}-{context}", "context": context, "features": xa, "targets": ya,
                    "path": prepared.dataset.source, "origin": origin, "digest": digest(xa, ya)})
    return out
