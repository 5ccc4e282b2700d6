"""The `gradlab` command: Hydra composes the config, `record` trains and records it.

    gradlab [overrides...]            one run (Hydra overrides; -m for a multirun; --cfg job prints)
    gradlab rerun RUN_ID [--trust-code] [--trust-data]  run a logged run's exact config again (code or a file it names: trusted)
    gradlab plots RUN_ID...           draw recorded runs' figures into their records, from their history
    gradlab reap [--dry-run]          mark runs whose process died hard (SIGKILL) as KILLED
    gradlab ui [--port N]             the MLflow UI on the store, with the URLs of its runs views

User mistakes print one line naming the field and the fix, and exit 2; nothing is recorded.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from gradlab import safe, signals, timings
from gradlab.config import ConfigError, DataError, register_configs, to_typed
from gradlab.record import record
from gradlab.tracking import REGISTRY, TrackingError, project_root

register_configs()
USER_ERRORS = (ConfigError, DataError, TrackingError)


def _fail(message: str) -> None:
    print(f"gradlab: error: {message}", file=sys.stderr)
    sys.exit(2)


@hydra.main(version_base="1.3", config_path=str(project_root() / "conf"), config_name="config")
def _hydra_main(cfg: DictConfig) -> float:
    """One run (a multirun goes to run_sweep before Hydra is asked)."""
    from gradlab.describe import experiment_name
    from gradlab.record import Job, Origin

    hc = HydraConfig.get()
    try:
        typed = to_typed(cfg)
        origin = Origin(experiment_name(typed.tracking.experiment, hc.runtime.choices.get("experiment")))
        return record(Job(typed, list(hc.overrides.task)), origin).objective
    except USER_ERRORS as e:
        _fail(str(e))


def train(argv: list[str], shutdown: bool = True) -> int:
    """One run, or a sweep: -m, or a config that asks for one (a sweep file's hydra.mode).
    `shutdown=False` keeps the recorders for later calls."""
    from gradlab.explain import COMPOSITION_ERRORS, explain
    from gradlab.multirun import hydra_internals

    try:
        if _is_sweep(hydra_internals.parse(argv)):
            return _sweep(hydra_internals.parse(argv))
        with _errors_raised():
            _hydra_main()
        return 0
    except SystemExit as e:  # a user mistake in a single run (exit 2), or Hydra's own exits (--help)
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except COMPOSITION_ERRORS as e:  # a key, option or file the command line names that does not exist
        print(f"gradlab: error: {explain(e, argv)}", file=sys.stderr)
        return 2
    finally:
        if shutdown:
            REGISTRY.shutdown()


def _is_sweep(args) -> bool:
    """-m, or a sweep file (or hydra.mode override) that asks for a multirun; not --cfg, --help..."""
    if args.cfg or args.help or args.hydra_help or args.info or args.shell_completion:
        return False
    if args.multirun:
        return True
    if args.config_name is None and args.config_dir is None and not any(o.startswith("hydra.mode=") for o in args.overrides):
        return False  # conf/config.yaml is a single run: no composition spent on asking
    from gradlab.explain import COMPOSITION_ERRORS
    from gradlab.multirun import hydra_internals

    from hydra.core.global_hydra import GlobalHydra

    try:
        app = hydra_internals.hydra(project_root() / "conf", args.config_dir)
        return hydra_internals.is_multirun(app, args.config_name or "config", list(args.overrides))
    except COMPOSITION_ERRORS:  # said by the run's own composition
        return False
    finally:
        GlobalHydra.instance().clear()


def _sweep(args) -> int:
    """A sweep from the command line: run_sweep, its refusal said in one line (exit 2), 1 if a job failed."""
    from gradlab.multirun.run import run_sweep

    try:
        outcome = run_sweep(list(args.overrides), args.config_dir, args.config_name or "config")
    except USER_ERRORS as e:
        print(f"gradlab: error: {e}", file=sys.stderr)
        return 2
    return 1 if outcome is None or outcome.failed else 0


@contextlib.contextmanager
def _errors_raised():
    """Hydra raises its errors instead of printing them (HYDRA_FULL_ERROR): gradlab says them."""
    before = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = before


def rerun(args: list[str]) -> int:
    """Run a logged run's resolved config.yaml again, into the same experiment. The config comes
    from a store, which others may write: it is read as plain data; code it names (model.target,
    train.loss_target) is imported only with --trust-code, a file it names (data.path) read only
    with --trust-data."""
    flags = {"--trust-code", "--trust-data"}
    ids = [a for a in args if a not in flags]
    if len(ids) != 1 or ids[0].startswith("-"):
        _fail("usage: gradlab rerun RUN_ID [--trust-code] [--trust-data]   (the run id is on the run's page in the UI, "
              "or in the summary; --trust-code: import the code its config names; --trust-data: read the data file "
              "it names)")
    from gradlab.redraw import data_file, stored_config, user_code
    from gradlab.tracking import Store, query

    run_id = ids[0]
    store = Store()
    cfg = stored_config(store, run_id)
    code = user_code(cfg)
    if code and "--trust-code" not in args:
        named = ", ".join(f"{k}={v!r}" for k, v in code.items())
        _fail(f"run {run_id} imports code, {named}; rerun it with --trust-code if you trust "
              "that code (a stored config is data, and gradlab imports nothing it names unasked)")
    if code:
        _say_if_changed(query.run(store, run_id))
    if data_file(cfg):
        if "--trust-data" not in args:
            _fail(f"run {run_id}'s config reads data.path={cfg.data.path!r} as you, and what it reads lands "
                  f"in the store (its inputs, its figures); a stored config names that file, so rerun reads it only "
                  f"when you say so: gradlab rerun {run_id} --trust-data")
        print(f"gradlab: rerun of {run_id} reads data.path={cfg.data.path!r} (--trust-data)", file=sys.stderr)
    cfg.tracking.skip_finished = False  # a rerun runs, even where the original had resumed a sweep
    from gradlab.record import Job, Origin

    record(Job(cfg, [], {"gradlab.rerun_of": run_id}), Origin(cfg.tracking.experiment))
    return 0


def _say_if_changed(run) -> None:
    """A note for each file of the user's code that is not the one the run recorded (its sha256 tag)."""
    import hashlib

    for name in ("target", "loss_target"):
        recorded, path = run.tags.get(f"gradlab.{name}.sha256"), run.tags.get(f"gradlab.{name}.path")
        if recorded and path and Path(path).is_file() and hashlib.sha256(Path(path).read_bytes()).hexdigest() != recorded:
            print(f"gradlab: note: {path} has changed since run {run.id} recorded it (its source is the run's "
                  f"artifact {name}/{Path(path).name}); rerunning with the file as it is now", file=sys.stderr)


def plots(args: list[str]) -> int:
    """Draw recorded runs' figures into their records, from their history.csv (a run of a large
    sweep, or one recorded with tracking.plots=none). The same trust as rerun: a stored config's
    code is imported only with --trust-code, its data file read only with --trust-data."""
    flags = {"--trust-code", "--trust-data"}
    ids = [a for a in args if a not in flags]
    if not ids or any(i.startswith("-") for i in ids):
        _fail("usage: gradlab plots RUN_ID... [--trust-code] [--trust-data]   (draws each run's figures into its "
              "record from its history.csv; the run id is on the run's page in the UI)")
    from gradlab.redraw import draw
    from gradlab.tracking import Store

    store = Store()
    for run_id in ids:
        drawn = draw(store, run_id, "--trust-code" in args, "--trust-data" in args)
        print(f"gradlab: run {run_id}: drew {', '.join(drawn)}")
    return 0


def reap(args: list[str]) -> int:
    """Close runs left RUNNING by a process that no longer exists on this host."""
    from gradlab.tracking import Store
    from gradlab.tracking.reap import reap as reap_runs

    if args not in ([], ["--dry-run"]):
        _fail("usage: gradlab reap [--dry-run]   (--dry-run lists the runs it would mark KILLED)")
    lines = reap_runs(Store(), dry_run=bool(args))
    print("\n".join(lines))
    return 2 if any(line.startswith("could not") for line in lines) else 0


def ui(args: list[str]) -> int:
    """The MLflow UI on the store: gradlab opens (or creates) it first, under its creation lock
    (a UI creating the same new store beside a starting run would corrupt it), prints the URLs
    of the runs views, then serves it on loopback."""
    if len(args) > 2 or (args and args[0] != "--port") or (len(args) == 2 and not args[1].isdigit()):
        _fail("usage: gradlab ui [--port N]   (default 5000; the store is MLFLOW_TRACKING_URI, else mlruns/)")
    from gradlab.tracking import Store
    from gradlab.tracking.ui import serve

    serve(Store(), int(args[1]) if len(args) == 2 else 5000)
    return 0


COMMANDS = {"rerun": rerun, "plots": plots, "reap": reap, "ui": ui}


def help_text() -> str:
    """gradlab's own help, printed before Hydra's flags: commands, groups, recipes, sweeps, store."""
    from gradlab.config import TrackingConfig, TrainConfig
    from gradlab.tracking import tracking_uri

    conf, sweeps = project_root() / "conf", project_root() / "sweeps"

    def names(folder: Path) -> str:
        return ", ".join(sorted(p.stem for p in folder.glob("*.yaml")))

    def keys(schema) -> str:
        return "keys " + ", ".join(f.name for f in dataclasses.fields(schema))

    groups = "\n".join(f"  {g:<10} {names(conf / g)}" for g in ("data", "model", "grad", "optimizer", "device", "schedule"))
    return f"""gradlab: train and compare gradient-descent experiments, each recorded in MLflow.

Commands
  gradlab [KEY=VALUE ...]          one run: train, evaluate, record (gradlab optimizer=adam optimizer.lr=0.1)
  gradlab -m KEY=A,B ...           a sweep: one parent run, a child run per job
  gradlab -m -cd sweeps -cn NAME   a sweep file from sweeps/ (make sweep SWEEP=NAME)
  gradlab rerun RUN_ID             run a logged run's exact config again (--trust-code: its model.target or
                                   train.loss_target imported; --trust-data: its data.path read)
  gradlab plots RUN_ID...          draw recorded runs' figures into their records, from their history.csv
                                   (a large sweep draws its best runs' only; --trust-code, --trust-data as rerun)
  gradlab reap [--dry-run]         mark runs whose process died hard as KILLED
  gradlab ui [--port N]            the MLflow UI on the store, with the URLs of its runs views
  gradlab --cfg job                print the composed config
  gradlab-compare [--experiment E] the comparison report of a sweep

Config groups (GROUP=OPTION; each option's keys: GROUP.KEY=VALUE, listed by gradlab --cfg job)
{groups}
  train      {keys(TrainConfig)}
  tracking   {keys(TrackingConfig)}

Recipes (experiment=NAME): {names(conf / "experiment")}
Sweeps (-cd sweeps -cn NAME): {names(sweeps)}
Runs go to {tracking_uri()} (MLFLOW_TRACKING_URI overrides it).
"""


def main() -> None:
    timings.stamp("main")
    safe.guard_output()  # what a store, a server or a library says: no escape sequence, no password
    argv = sys.argv[1:]
    if argv and argv[0] in ("--help", "-h"):
        print(help_text())
    command = COMMANDS.get(argv[0]) if argv else None
    try:
        with signals.as_exceptions():
            code = command(argv[1:]) if command else train(argv)
    except signals.Killed as e:
        timings.write()
        signals.die(e.signum)
    except USER_ERRORS as e:
        _fail(str(e))
    timings.write()
    sys.exit(code)
