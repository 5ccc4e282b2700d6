"""gradlab from Python, for notebooks: run, sweep and read results.

    import gradlab
    r = gradlab.run("experiment=thermometer_handgrad_raw", optimizer__lr=1e-2)   # __ stands for .
    gradlab.run(model=MyNet, data="teacher")   # your nn.Module (or objective function), importable by name
    r.outcome, r.metrics, r.history            # the history: a DataFrame, every recorded epoch
    r                                          # in Jupyter: its summary and figures inline
    s = gradlab.sweep({"optimizer": ["gd", "adam"], "optimizer.lr": [1e-3, 1e-2]}, "train.epochs=500")
    s.runs                                     # the tidy DataFrame the comparison report uses
    s.figures()                                # the report's figures
    gradlab.runs(experiment="default"), gradlab.history(r.run_id)
    gradlab.draw_plots(run_id)                 # a run's figures drawn into its record later (gradlab plots)

The same conf/, the same validation and the same store as the CLI (MLFLOW_TRACKING_URI, else
mlruns/). User mistakes raise ConfigError (OverrideError for what Hydra cannot compose), DataError
or TrackingError with the CLI's one-line message, never SystemExit; an interrupted cell leaves its runs KILLED and raises KeyboardInterrupt.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import io
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from gradlab import signals
from gradlab.options import ArgumentTypeError, OverrideError

SWEEP_FILES = Path(__file__).resolve().parents[2] / "sweeps"
# Optuna imports tqdm.auto, which warns in Jupyter without ipywidgets; gradlab shows no tqdm bars.
warnings.filterwarnings("ignore", message="IProgress not found")
# Hydra's composition state and the signal handlers are the process's: calls from threads take turns.
_TURN = threading.Lock()


def _in_turn(call):
    @functools.wraps(call)
    def wrapped(*args, **kwargs):
        with _TURN:
            return call(*args, **kwargs)
    return wrapped


# -------------------------------------------------------------------------------- runs
@dataclass
class RunResult:
    """One recorded run: what `gradlab.run` returns."""

    run_id: str
    experiment: str
    name: str
    outcome: str  # completed | reached_stop_loss | diverged
    metrics: dict[str, float]
    params: dict[str, list]  # final parameters, after the last update
    optimum: dict[str, list] | None  # the closed-form optimum, where there is one
    history: pd.DataFrame  # every recorded epoch (as history.csv)
    config: object = field(repr=False)
    _result: object = field(repr=False)
    _figures: dict | None = field(default=None, repr=False)

    @property
    def figures(self) -> dict:
        """The run's figures (matplotlib Figures, by artifact name), drawn again from its result."""
        if self._figures is None:
            from gradlab import describe, plots, training

            s = training.setup(self.config)
            self._figures = plots.figures(training.plot_data(s, 0, self._result, describe.title(self.config)))
        return self._figures

    def _repr_html_(self) -> str:
        from gradlab import plots

        metrics = "".join(f"<tr><td>{k}</td><td>{v:.6g}</td></tr>" for k, v in self.metrics.items())
        images = "".join(f'<img src="data:image/png;base64,{base64.b64encode(plots.png(f)).decode()}" width="480">'
                         for f in self.figures.values())
        return (f"<b>{self.name}</b>: {self.outcome} after {len(self.history)} recorded epochs "
                f"(run {self.run_id} in {self.experiment!r})<table>{metrics}</table>{images}")


@_in_turn
def run(*overrides: str, **settings) -> RunResult:
    """Compose conf/ with these overrides (and settings: optimizer__lr=0.1 is optimizer.lr=0.1),
    train and record one run; its result."""
    from gradlab import describe
    from gradlab.record import Job, Origin, record

    _strings("gradlab.run", overrides, "gradlab.run('optimizer=adam', optimizer__lr=0.1)")
    args = [*overrides, *(f"{k.replace('__', '.')}={_value(v)}" for k, v in _code_settings(settings).items())]
    cfg, recipe = compose(args)
    cfg.tracking.skip_finished = False  # a call asks for a run and its result: it always trains
    experiment = describe.experiment_name(cfg.tracking.experiment, recipe)
    with _interruptible():
        rec = record(Job(cfg, args), Origin(experiment), quiet=True)
    result = rec.result
    return RunResult(rec.run_id, experiment, describe.run_name(cfg, args), rec.outcome, dict(result.metrics), result.params,
                     result.optimum, pd.DataFrame(list(result.history.records()), columns=result.history.columns),
                     cfg, result)


def compose(overrides: list[str]):
    """(the typed, validated config, the recipe chosen) for these overrides, as the CLI composes them."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from gradlab.config import register_configs, to_typed, validate
    from gradlab.explain import COMPOSITION_ERRORS, explain
    from gradlab.tracking import project_root

    register_configs()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(str(project_root() / "conf"), version_base="1.3"):
            cfg = hydra_compose("config", overrides=list(overrides), return_hydra_config=True)
    except COMPOSITION_ERRORS as e:  # a bad key, option or value: the CLI's line (gradlab.explain)
        raise OverrideError(explain(e, list(overrides))) from None
    recipe = cfg.hydra.runtime.choices.get("experiment")
    from omegaconf import open_dict

    with open_dict(cfg):
        del cfg["hydra"]
    typed = to_typed(cfg)
    validate(typed)
    return typed, recipe


# ------------------------------------------------------------------------------ sweeps
@dataclass
class SweepResult:
    """One recorded sweep: its parent run and the tidy frame of its runs, in the ranking's order
    (`rank` within each problem, by the sweep's objective: gradlab.ranking)."""

    parent_id: str
    experiment: str
    runs: pd.DataFrame
    failed: int  # jobs that failed (a diverged one is a result, not a failure)

    @property
    def configurations(self) -> pd.DataFrame:
        """A row per configuration, its seeds together (k/n at the optimum, mean and spread), best first."""
        from gradlab import compare

        return compare.configurations(self.runs)

    @property
    def best(self) -> pd.DataFrame:
        """The best run of each problem (one row for a sweep of one problem): the parent's best_run."""
        from gradlab import ranking

        best = {r.run_id for r in ranking.best(_entries(self.runs)).values()}
        return self.runs[self.runs["run_id"].isin(best)]

    def figures(self) -> dict:
        """The comparison report's figures for these runs (matplotlib Figures, by file name)."""
        from gradlab import compare, report_search
        from gradlab.tracking import Store, query

        import matplotlib.pyplot as plt

        store = Store()
        cur = compare.curves(store, self.runs)
        if report_search.is_search(self.runs):
            figs = report_search.figures(self.runs, cur, query.run(store, self.parent_id))
        else:
            figs = compare.figures(self.runs, cur, compare.swept(self.runs), compare.default_threshold(self.runs))
        for fig in figs.values():  # out of pyplot's keeping: Jupyter shows the one asked for, not all
            plt.close(fig)
        return figs

    def _repr_html_(self) -> str:
        cols = [c for c in ["rank", "run_name", "outcome", "verdict", "epochs_to_optimum", "excess_loss", "final_loss",
                            "epochs_run"] if c in self.runs]
        table = self.runs[cols].to_html(index=False, float_format=lambda v: f"{v:.4g}")
        return f"<b>sweep {self.parent_id}</b> in {self.experiment!r}: {len(self.runs)} runs, {self.failed} failed{table}"


@_in_turn
def sweep(grid: dict | str | list[str], *overrides: str, launcher: str = "batched") -> SweepResult:
    """A multirun: `grid` as {key: [values]}, Hydra sweep strings ("optimizer=gd,adam"), or the
    name of a file in sweeps/; recorded as a parent run with a child per job, as `make sweep`.
    Refused before any job ran, it raises the CLI's one-line message as OverrideError (a bad
    key, option or value), ConfigError or TrackingError."""
    from gradlab.multirun.run import run_sweep

    if not isinstance(grid, (dict, str, list, tuple)):
        raise ArgumentTypeError(f"gradlab.sweep: the grid is a dict {{key: [values]}}, sweep strings or a sweep file's "
                                f"name, not {type(grid).__name__} {grid!r}; e.g. gradlab.sweep({{'optimizer.lr': [0.01, 0.1]}})")
    if isinstance(grid, (list, tuple)):
        _strings("gradlab.sweep", grid, "gradlab.sweep(['optimizer=gd,adam', 'optimizer.lr=0.01,0.1'])")
    _strings("gradlab.sweep", overrides, "gradlab.sweep({'optimizer.lr': [0.01, 0.1]}, 'train.epochs=500')")
    for key, values in (grid.items() if isinstance(grid, dict) else ()):
        if not isinstance(key, str) or (isinstance(values, (list, tuple)) and not values):
            raise ArgumentTypeError(f"gradlab.sweep: the grid's {key!r}: keys are strings and each has at least one "
                                    "value; e.g. gradlab.sweep({'optimizer.lr': [0.01, 0.1]})")
    config_dir, config_name, args = _sweep_args(grid)
    args = [*args, *overrides]
    if not any(a.startswith(("hydra/launcher=", "hydra.launcher")) for a in args) and launcher:
        args.append(f"hydra/launcher={launcher}")
    if not any(a.startswith("hydra.sweep.dir=") for a in args):  # Hydra's bookkeeping, out of the way
        import tempfile

        args.append(f"hydra.sweep.dir={tempfile.mkdtemp(prefix='gradlab-sweep-')}")
    with _interruptible(), signals.as_exceptions():
        outcome = run_sweep(args, config_dir, config_name)
    return _sweep_result(outcome.parent_id, outcome.experiment)


def _entries(frame: pd.DataFrame) -> list:
    from gradlab import compare

    return compare.entries(frame)


def _sweep_args(grid) -> tuple[str | None, str, list[str]]:
    """(config dir, config name, overrides) of a grid given as a dict, sweep strings or a sweep file's name."""
    if isinstance(grid, dict):
        return None, "config", [f"{k}={','.join(_value(v) for v in (vs if isinstance(vs, (list, tuple)) else [vs]))}"
                                for k, vs in grid.items()]
    items = [grid] if isinstance(grid, str) else list(grid)
    if len(items) == 1 and "=" not in items[0]:  # a sweep file's name (one that is not there: the CLI's line)
        return str(SWEEP_FILES), items[0], []
    return None, "config", items


def _sweep_result(parent_id: str, experiment: str) -> SweepResult:
    from gradlab import compare
    from gradlab.tracking import Store, query, results

    store = Store()
    frame = compare.tidy(results.children(store, query.run(store, parent_id)))
    failed = int(frame["outcome"].isin(["failed", "killed", "running"]).sum()) if len(frame) else 0
    return SweepResult(parent_id, experiment, frame, failed)


# ------------------------------------------------------------------------------- reads
def runs(experiment: str | None = None, sweep: str | None = None) -> pd.DataFrame:
    """Recorded runs as the report's tidy frame: a sweep's children (its parent run id), an
    experiment's runs, or, with neither, the children of the latest sweep."""
    from gradlab import compare
    from gradlab.tracking import Store

    _, _, frame = compare.select(Store(), experiment, sweep, everything=experiment is not None and sweep is None)
    return frame


def draw_plots(*run_ids: str, trust_code: bool = False, trust_data: bool = False) -> dict[str, list[str]]:
    """Draw recorded runs' figures into their records, from their history (`gradlab plots`: a
    large sweep's runs other than its best, runs recorded with tracking.plots=none); run id -> the
    artifact paths drawn. trust_code / trust_data as for `gradlab rerun`."""
    from gradlab import redraw
    from gradlab.tracking import Store

    _strings("gradlab.draw_plots", run_ids, "gradlab.draw_plots('5a38007be932456eac8e46e58202e7e1')")
    store = Store()
    return {run_id: redraw.draw(store, run_id, trust_code, trust_data) for run_id in run_ids}


def history(run_id: str) -> pd.DataFrame:
    """A run's whole history (history.csv: every recorded epoch, not the thinned metrics)."""
    from gradlab.tracking import Store, query

    return pd.read_csv(io.StringIO(query.artifact_text(Store(), run_id, "history.csv")))


# ------------------------------------------------------------------------------ helpers
def _code_settings(settings: dict) -> dict:
    """`model=` given your code itself rather than an option's name: an nn.Module class makes
    model=module, another function model=objective, with model.target naming it."""
    out = {}
    for k, v in settings.items():
        if k == "model" and callable(v):
            from torch import nn

            out["model"] = "module" if isinstance(v, type) and issubclass(v, nn.Module) else "objective"
            out["model__target"] = v
        else:
            out[k] = v
    return out


def _strings(call: str, overrides, example: str) -> None:
    """Overrides are strings, one per argument: anything else is said with what would work."""
    for o in overrides:
        if not isinstance(o, str):
            raise ArgumentTypeError(f"{call}: an override is a string KEY=VALUE, not {type(o).__name__} {o!r}; "
                                    f"e.g. {example}")


def _value(v) -> str:
    """A Python value as Hydra's override grammar reads it; a class or function (your code, for
    model.target) as the name gradlab imports it by."""
    if callable(v) and not isinstance(v, str):
        from gradlab.targets import spec_of

        return spec_of("model.target", v)
    if isinstance(v, bool):
        return str(v).lower()
    if v is None:
        return "null"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(_value(x) for x in v) + "]"
    return str(v)


@contextlib.contextmanager
def _interruptible():
    """Ctrl-C (a notebook's interrupt) ends the runs KILLED, then is a KeyboardInterrupt again."""
    try:
        yield
    except signals.Killed:
        raise KeyboardInterrupt from None
