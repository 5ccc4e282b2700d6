"""A tracked run: validate, build, open the run, fit while streaming metrics, then record the end.

Whatever happens after the MLflow run is created, it ends with a status that tells the truth:
completed/converged -> FINISHED, diverged -> FAILED (with step and reason), an exception ->
FAILED (with its type and message), SIGINT/SIGTERM -> KILLED. Metrics logged so far and the
history up to that point are kept in every case.
"""

from __future__ import annotations

import getpass
import hashlib
import importlib.metadata
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from omegaconf import OmegaConf

from gradlab.config import SCHEMAS, Config, Scaling, validate

if TYPE_CHECKING:  # torch is imported by the run itself, after the recorder process has started
    from gradlab.engine import History

# Where a run is recorded, and whether progress is shown, do not change what it computes.
CONFIG_HASH_EXCLUDES = ("tracking", "train.progress")
TIMINGS_ENV = "GRADLAB_TIMINGS"  # a file: the benchmark's view of where a run's time goes
_stamps: dict[str, float] = {}


def stamp(name: str) -> None:
    """Note the wall-clock time of a phase (only when the benchmark asks for it)."""
    if os.environ.get(TIMINGS_ENV):
        _stamps[name] = time.time()


def _write_timings(recorder) -> None:
    import resource

    path = os.environ.get(TIMINGS_ENV)
    if path:
        child = recorder.call(0, "timings", wait=True)
        data = {"stamps": dict(_stamps), "peak_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                "recorder": child}
        with open(path, "w") as f:
            json.dump(data, f)


class Killed(BaseException):
    """SIGTERM or SIGINT arrived: unwinds like KeyboardInterrupt so `finally` blocks record the end."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextmanager
def signals_as_exceptions():
    """SIGTERM raises Killed in the main thread (SIGINT already raises KeyboardInterrupt)."""
    def handler(signum, frame):
        raise Killed(signum)

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# ----------------------------------------------------------------- config as a record
def container(cfg: Config) -> dict:
    return OmegaConf.to_container(OmegaConf.structured(cfg), enum_to_str=True)


def to_yaml(cfg: Config) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def flatten(d: dict, prefix: str = "") -> dict[str, str]:
    """{"optimizer": {"lr": 0.01}} -> {"optimizer.lr": "0.01"}; lists and empty dicts as JSON."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = json.dumps(v) if isinstance(v, (list, dict)) else str(v)
    return out


def from_container(d: dict) -> Config:
    """A typed Config from a plain dict such as a logged config.yaml (each option's own schema)."""
    base = Config(**{g: SCHEMAS[g][d[g]["name"]](name=d[g]["name"]) for g in SCHEMAS})
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(base), d))


def config_hash(flat: dict[str, str]) -> str:
    """Of the flattened config, less what does not change the result (CONFIG_HASH_EXCLUDES)."""
    kept = {k: v for k, v in flat.items() if not any(k == e or k.startswith(e + ".") for e in CONFIG_HASH_EXCLUDES)}
    return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()[:16]


def run_name(cfg: Config) -> str:
    """Readable from the choices: thermometer-x0.1-linear-autograd-sgd-lr0.01."""
    if cfg.tracking.run_name:
        return cfg.tracking.run_name
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
    extra = [f"bs{cfg.train.batch_size}"] if cfg.train.batch_size else []
    extra += [f"seed{cfg.train.seed}"] if cfg.train.seed else []
    return "-".join([*data, cfg.model.name, cfg.grad.name, *device, opt, f"lr{cfg.optimizer.lr:g}", *extra])


def title(cfg: Config) -> str:
    d, t = cfg.data, cfg.train
    scaling = {"none": "raw inputs", "factor": f"inputs ×{d.scale_factor:g}"}.get(d.scaling.value, f"{d.scaling.value}d inputs")
    data = "" if d.name == "none" else f"{d.name}, {scaling} · "
    batch = "full batch" if t.batch_size is None else f"batch {t.batch_size}"
    return f"{data}{cfg.model.name} · {cfg.grad.name} · {cfg.optimizer.name} lr={cfg.optimizer.lr:g} · {batch}"


# ----------------------------------------------------------------------- provenance
def _git(*args: str) -> str | None:
    from gradlab.tracking import project_root

    try:
        r = subprocess.run(["git", "-C", str(project_root()), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout.strip() if r.returncode == 0 else None


def provenance() -> dict[str, str]:
    from gradlab.tracking import process_start

    commit = _git("rev-parse", "HEAD")
    dirty = _git("status", "--porcelain", "--untracked-files=no") if commit else None
    tags = {
        "mlflow.user": getpass.getuser(),
        "mlflow.source.name": "gradlab",
        "mlflow.source.type": "LOCAL",
        "gradlab.git.commit": commit or "unknown",
        "gradlab.git.dirty": "unknown" if dirty is None else str(bool(dirty)).lower(),
        "gradlab.host": socket.gethostname(),
        "gradlab.pid": str(os.getpid()),
        "gradlab.pid_start": process_start(os.getpid()),
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


def _device_name(device: str) -> str:
    if device.startswith("cuda"):
        import torch

        return f"{device} ({torch.cuda.get_device_name()})"
    return device


def _digest(*arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(a.tobytes())
    return h.hexdigest()[:32]  # MLflow keeps at most 36 characters


def datasets(s, flat: dict[str, str]) -> list[dict]:
    """Train and validation sets as MLflow inputs, with a digest of all of their values."""
    pr = s.prepared
    if pr is None:
        return []
    ds = pr.dataset
    origin = {f"gradlab.{k}": v for k, v in flat.items() if k.startswith("data.")}
    out = []
    for context, x, y in (("training", pr.raw_train, pr.y_train), ("validation", pr.raw_val, pr.y_val)):
        if x is None:
            continue
        xa, ya = x.numpy(), y.numpy()
        out.append({"name": f"{s.cfg.data.name}-{context}", "context": context, "features": xa,
                    "targets": ya, "path": ds.source, "origin": origin, "digest": _digest(xa, ya)})
    return out


# --------------------------------------------------------------------------- progress
class Progress:
    """A status line on a terminal every second or so; silent otherwise."""

    def __init__(self, total: int, columns: list[str], enabled: bool | None):
        self.total, self.columns = total, columns
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.next = time.monotonic() + 1.0
        self.shown = False

    def __call__(self, row) -> None:
        if self.enabled and time.monotonic() >= self.next:
            self.next = time.monotonic() + 1.0
            losses = "  ".join(f"{c} {v:.4g}" for c, v in zip(self.columns[1:], row[1:]) if c.endswith("loss"))
            print(f"\r  epoch {int(row[0])}/{self.total} ({100 * row[0] / self.total:.0f}%)  {losses}   ",
                  end="", file=sys.stderr, flush=True)
            self.shown = True

    def close(self) -> None:
        if self.shown:
            print(file=sys.stderr)


# --------------------------------------------------------------------------- the run
@dataclass
class Recorded:
    run_id: str
    outcome: str
    objective: float
    result: object  # run.Result, or None if skipped (an identical run already has a result)


def history_csv(h: History) -> str:
    lines = [",".join(h.columns)]
    lines += [",".join(str(int(v)) if i == 0 else repr(float(v)) for i, v in enumerate(r)) for r in h.rows]
    return "\n".join(lines) + "\n"


def record(cfg: Config, *, experiment: str, overrides: list[str] | None = None, parent_run_id: str | None = None,
           sweep: str | None = None, extra_tags: dict | None = None, quiet: bool = False) -> Recorded:
    """Validate, build, then train and record one run. User mistakes raise before a run exists.

    The MLflow side runs in the recorder process (tracking.Recorder); this returns once the
    run's record is complete, so an error in it is reported for this run and no other.
    """
    from gradlab.tracking import STATUS, Recorder

    stamp("record")
    validate(cfg)
    cfg.tracking.experiment = experiment
    recorder = Recorder.shared()
    store = recorder.store()  # checked here; the child imports mlflow and opens it while torch loads
    from gradlab import run as run_mod
    from gradlab.engine import History, columns, fit

    s = run_mod.setup(cfg)  # ConfigError / DataError here leave no run behind
    stamp("setup")
    flat = flatten(container(cfg))
    chash = config_hash(flat)
    if cfg.tracking.skip_finished:
        done = store.finished_run(experiment, chash)
        if done is not None:
            run_id, outcome, metrics = done
            if not quiet:
                print(f"gradlab: skipped {run_name(cfg)}: run {run_id} already {outcome} with this config")
            return Recorded(run_id, outcome, run_mod.objective(metrics, outcome), None)
    # A store the child could not open by now stops us before training; one that fails later
    # (an old schema takes a moment to find) stops training at the next metric flush.
    recorder.poll()

    name = run_name(cfg)
    n_val = 0 if s.problem.val is None else len(s.problem.val[1])
    n_train = s.problem.n_train if s.problem.stream is None else (cfg.train.batch_size or 1) * cfg.train.epochs
    params = {**flat, "n_train": str(n_train), "n_val": str(n_val), "n_params": str(s.n_params)}
    tags = {**provenance(), "gradlab.outcome": "running", "gradlab.config_hash": chash,
            "gradlab.device": _device_name(s.backend.device), "gradlab.seed": str(cfg.train.seed),
            "gradlab.overrides": " ".join(overrides or []), **(extra_tags or {})}
    if sweep:
        tags["gradlab.sweep"] = sweep
    if s.prepared is not None and s.prepared.dataset.sha256:
        tags["gradlab.data.sha256"] = s.prepared.dataset.sha256
        tags["gradlab.data.path"] = s.prepared.dataset.source

    run = store.start_run(experiment, name, params, tags, parent_run_id)
    files = {"config.yaml": to_yaml(cfg), "overrides.txt": "\n".join(overrides or []) + "\n"}
    history = History(columns(s.problem, s.params))
    expected = 1 + cfg.train.epochs // cfg.train.log_every
    stream = run.metric_stream(history.columns, expected, cfg.tracking.max_points)
    progress = Progress(cfg.train.epochs, history.columns, cfg.train.progress)
    outcome, result, end_tags, plot_data, failing = "failed", None, {}, None, False

    def on_log(row):
        stream(row)
        progress(row)

    try:
        with signals_as_exceptions():
            run.log_inputs(datasets(s, flat))
            fit(s.problem, s.params, s.grad_fn, s.optimizer, epochs=cfg.train.epochs, log_every=cfg.train.log_every,
                stop_loss=cfg.train.stop_loss, on_log=on_log, history=history)
            stamp("trained")
            progress.close()
            result = run_mod.evaluate(s, history)
            outcome = history.outcome
            if outcome == "diverged":
                end_tags.update({"gradlab.diverged_step": str(history.stop_step), "gradlab.reason": history.reason})
            files["params.json"] = json.dumps({"params": result.params, "optimum": result.optimum}, indent=2)
            if cfg.tracking.plots:
                try:
                    plot_data = run_mod.plot_data(s, result, title(cfg))
                except Exception as e:  # noqa: BLE001 - a figure is no reason to fail a sound run
                    end_tags["gradlab.plot_error"] = f"{type(e).__name__}: {e}"
    except (KeyboardInterrupt, Killed) as e:
        failing = True
        progress.close()
        signum = e.signum if isinstance(e, Killed) else signal.SIGINT
        outcome = "killed"
        end_tags["gradlab.signal"] = signal.Signals(signum).name
        raise Killed(signum) from None
    except Exception as e:
        failing = True
        progress.close()
        outcome = "failed"
        end_tags.update({"gradlab.error.type": type(e).__name__, "gradlab.error.message": str(e) or repr(e)})
        raise
    finally:
        # Record the end whatever happened; a second Ctrl-C here must not leave the run RUNNING.
        with _deferred_signals():
            try:
                stream.close()
                files["history.csv"] = history_csv(history)
                metrics = result.metrics if result is not None else {"epochs_run": float(history.epochs_run)}
                # Final metrics at step 0: the UI charts single-valued metrics as bars across runs.
                run.finish(STATUS[outcome], metrics, 0, {"gradlab.outcome": outcome, **end_tags}, files, plot_data)
                stamp("queued")
                recorder.sync()
                stamp("recorded")
                _write_timings(recorder)
            except Exception:
                if not failing:  # else the error that stopped the run is the one to report
                    raise
    if not quiet:
        print(summary(name, run.id, experiment, store.uri, history, result))
    return Recorded(run.id, outcome, result.objective, result)


@contextmanager
def _deferred_signals():
    """Hold SIGINT/SIGTERM while the end of a run is written; re-deliver them afterwards."""
    pending = []

    def hold(signum, frame):
        pending.append(signum)

    try:
        old = {sig: signal.signal(sig, hold) for sig in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)
        if pending:
            raise Killed(pending[0])


def summary(name: str, run_id: str, experiment: str, uri: str, h: History, result) -> str:
    m = result.metrics
    lines = [f"gradlab: {name}: {h.outcome} after {h.epochs_run} epochs in {h.seconds:.2f} s"
             + (f" ({h.reason})" if h.reason else "")]
    keys = ("final_train_loss", "final_val_loss", "best_val_loss", "optimal_train_loss", "excess_loss")
    lines.append("  " + "  ".join(f"{k} {m[k]:.6g}" for k in keys if k in m))
    shown = ", ".join(f"{k}={_short(v)}" for k, v in result.params.items())
    lines.append(f"  params {shown}" if len(shown) < 200 else f"  params: {len(result.params)} tensors (params.json)")
    lines.append(f"  run {run_id} in experiment {experiment!r} at {uri}")
    return "\n".join(lines)


def _short(v) -> str:
    if isinstance(v, list):
        return "[" + ", ".join(_short(x) for x in v) + "]"
    return f"{v:.5g}"
