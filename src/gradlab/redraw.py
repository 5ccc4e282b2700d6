"""A recorded run's figures drawn later, from its record: config.yaml, history.csv, params.json
and its final metrics go through the code a run's end uses (training.plot_data, plots.files), so
the figures are the ones it would have drawn itself. For `gradlab plots RUN_ID` and for a large
sweep's best runs (tracking.plots=auto, multirun/figures.py)."""

from __future__ import annotations

import json
from dataclasses import replace

from gradlab.config import Config, ConfigError, CsvDataConfig, DataError, MAX_STORED_CONFIG, from_container, stored_yaml
from gradlab.engine import History
from gradlab.tracking import RESULTS, Store, TrackingError
from gradlab.tracking import query


def stored_config(store: Store, run_id: str) -> Config:
    """A run's config.yaml as a typed config, read as data (DataError where it is not one this
    version of gradlab reads)."""
    from omegaconf.errors import OmegaConfBaseException

    raw = query.artifact_bytes(store, run_id, "config.yaml", limit=MAX_STORED_CONFIG)
    try:
        return from_container(stored_yaml(raw, f"the config.yaml of run {run_id}"))
    except (ConfigError, DataError):
        raise
    except (OmegaConfBaseException, KeyError, TypeError, ValueError, AttributeError) as e:
        raise DataError(f"the config.yaml of run {run_id} does not fit this version of gradlab ({e}); "
                        "check out the commit in its gradlab.git.commit tag and rerun from there") from None


def user_code(cfg: Config) -> dict[str, str]:
    """The code a config imports, by the key that names it (model.target, train.loss_target)."""
    return {k: v for k, v in (("model.target", getattr(cfg.model, "target", None)),
                              ("train.loss_target", cfg.train.loss_target)) if v}


def data_file(cfg: Config) -> str | None:
    """The file a config reads (data.path of data=csv)."""
    return cfg.data.path if isinstance(cfg.data, CsvDataConfig) and cfg.data.path else None


def history(text: str) -> History:
    """history.csv back as the History it was written from (repr round-trips every value)."""
    lines = iter(text.splitlines())
    h = History(next(lines).split(","))
    for line in lines:
        epoch, *row = line.split(",")
        h.append(int(epoch), [float(v) for v in row])
    return h


def figures(store: Store, run_id: str, trust_code: bool = False, trust_data: bool = False) -> dict[str, bytes]:
    """The run's figures as PNG, by artifact path (plots/loss_curves.png, ...). A run that ended
    without a result (failed, killed) has none; a config that imports code or reads a file is
    built only when trusted (a store is shared: its configs are data)."""
    from gradlab import describe, plots, training

    run = query.run(store, run_id)
    if run.outcome not in RESULTS:
        raise TrackingError(f"run {run_id} ended {run.outcome}: it has no result (params.json) to draw figures of")
    cfg = stored_config(store, run_id)
    code, path = user_code(cfg), data_file(cfg)
    if code and not trust_code:
        named = ", ".join(f"{k}={v!r}" for k, v in code.items())
        raise DataError(f"run {run_id} imports code, {named}; draw its figures with gradlab plots {run_id} "
                        "--trust-code if you trust that code (a stored config is data, and gradlab imports nothing it names unasked)")
    if path and not trust_data:
        raise DataError(f"run {run_id}'s config reads data.path={path!r} as you; draw its figures with "
                        f"gradlab plots {run_id} --trust-data if you mean to read that file")
    h = history(query.artifact_text(store, run_id, "history.csv"))
    h.outcome = run.outcome
    step = run.tags.get(f"gradlab.{run.outcome}_step")
    h.stop_step = int(step) if step else None
    saved = json.loads(query.artifact_text(store, run_id, "params.json"))
    if cfg.device.name != "numpy":  # figures are drawn from float64 CPU copies: a GPU run's draw where there is none
        cfg = replace(cfg, device=replace(cfg.device, name="cpu"))
    s = training.setup(cfg)
    result = training.Result(h, dict(run.metrics), saved["params"], saved["optimum"])
    return plots.files(training.plot_data(s, 0, result, describe.title(cfg)))


def draw(store: Store, run_id: str, trust_code: bool = False, trust_data: bool = False) -> list[str]:
    """Draw the run's figures into its record; their artifact paths."""
    files = figures(store, run_id, trust_code, trust_data)
    store.log_artifacts(run_id, files)
    return sorted(files)
