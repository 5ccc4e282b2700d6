"""The `gradlab` command: Hydra composes the config, `record` trains and records it.

    gradlab [overrides...]            one run (Hydra overrides; -m for a multirun; --cfg job prints)
    gradlab rerun RUN_ID              run a logged run's exact config again
    gradlab reap [--dry-run]          mark runs whose process died hard (SIGKILL) as KILLED
    gradlab ui [--port N]             the MLflow UI on the store, with the URLs of its runs views

User mistakes print one line naming the field and the fix, and exit 2; nothing is recorded.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import sys
import traceback
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from gradlab import signals, spill, timings
from gradlab.config import ConfigError, DataError, from_container, register_configs, to_typed
from gradlab.record import record
from gradlab.tracking import Recorder, TrackingError, project_root

register_configs()
USER_ERRORS = (ConfigError, DataError, TrackingError)


def _fail(message: str) -> None:
    print(f"gradlab: error: {message}", file=sys.stderr)
    sys.exit(2)


def _before_orphan_exit() -> None:
    """A joblib worker whose launcher died leaves by os._exit: what its job sent is delivered
    first, and its spilled histories removed (no finalizer runs then)."""
    Recorder.shutdown()
    spill.remove_all()


@hydra.main(version_base="1.3", config_path=str(project_root() / "conf"), config_name="config")
def _hydra_main(cfg: DictConfig) -> float:
    from gradlab import multirun, trials
    from gradlab.describe import experiment_name

    hc = HydraConfig.get()
    try:
        typed = to_typed(cfg)
        # In a sweep every job nests under the parent run, so it lives in the parent's experiment.
        experiment = multirun.sweep_experiment() or experiment_name(typed.tracking.experiment, hc.runtime.choices.get("experiment"))
        claim = trials.claim(hc.overrides.task)  # a search's trial, when this job is one (basic launcher)
        with signals.ended_with(multirun.launcher_pid(), _before_orphan_exit):
            rec = record(typed, experiment=experiment, overrides=list(hc.overrides.task), parent_run_id=multirun.parent_run_id(),
                         sweep=multirun.sweep_name(), extra_tags=claim.tags if claim else None,
                         watch=claim.watch if claim else None, varied=multirun.sweep_varies())
        return rec.objective
    except USER_ERRORS as e:
        if hc.mode == RunMode.MULTIRUN:  # Hydra records this job as failed and goes on with the others
            raise
        _fail(str(e))


def train(args: list[str], shutdown: bool = True) -> int:
    """One run, or a multirun (-m): Hydra composes each job's config and `record` runs it.
    Hydra reads the arguments from sys.argv; `shutdown=False` keeps the recorders for later calls."""
    from gradlab import multirun

    from gradlab.explain import COMPOSITION_ERRORS, explain

    code = 0
    try:
        with _errors_raised():
            _hydra_main()
    except signals.Killed as e:
        multirun.abort(e.signum)
        raise
    except SystemExit as e:  # a user mistake in a single run (exit 2)
        code = e.code if isinstance(e.code, int) else 1
    except COMPOSITION_ERRORS as e:  # a key, option or file the command line names that does not exist
        print(f"gradlab: error: {explain(e, args)}", file=sys.stderr)
        _stopped(multirun, e)
        code = 2
    except Exception as e:  # a job that crashed (a sweep re-raises it after every other job ran), or a bug
        if type(e).__name__ in multirun.WORKER_DIED:  # a fault, not a bug
            print(f"gradlab: error: a worker process of the sweep's launcher died ({_exit_codes(e)}): the run of its job "
                  "and those in flight beside it are KILLED, the jobs not started never ran", file=sys.stderr)
        elif isinstance(e, USER_ERRORS):  # a sweep's job stopped by its store or its recorder: said above it, once
            print(f"gradlab: error: {e}", file=sys.stderr)
        else:
            traceback.print_exc()
        _stopped(multirun, e)
        code = 1
    finally:
        failed = multirun.finish()  # a no-op once abort closed the sweep
        if shutdown:
            Recorder.shutdown()
    return code or (1 if failed else 0)


def _exit_codes(error: Exception) -> str:
    """"exit codes {SIGKILL(-9)}", as loky's message gives them."""
    found = re.search(r"exit codes of the workers are (\{[^}]*\})", str(error))
    return f"exit codes {found.group(1)}" if found else type(error).__name__


def _stopped(multirun, error: Exception) -> None:
    """What stopped a sweep fails its parent (a sweeper that crashed before any job left it empty)."""
    multirun.annotate({"gradlab.error.type": type(error).__name__, "gradlab.error.message": str(error) or repr(error)})


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
    """Run a logged run's resolved config.yaml again, into the same experiment."""
    if len(args) != 1 or args[0].startswith("-"):
        _fail("usage: gradlab rerun RUN_ID   (the run id is on the run's page in the UI, or in the summary)")
    from gradlab.tracking import Store, query

    text = query.artifact_text(Store(), args[0], "config.yaml")
    try:
        cfg = from_container(OmegaConf.to_container(OmegaConf.create(text)))
    except (OmegaConfBaseException, KeyError, TypeError) as e:
        _fail(f"the config.yaml of run {args[0]} does not fit this version of gradlab ({e}); "
              "check out the commit in its gradlab.git.commit tag and rerun from there")
    cfg.tracking.skip_finished = False  # a rerun runs, even where the original had resumed a sweep
    record(cfg, experiment=cfg.tracking.experiment, overrides=[], extra_tags={"gradlab.rerun_of": args[0]})
    return 0


def reap(args: list[str]) -> int:
    """Close runs left RUNNING by a process that no longer exists on this host."""
    from gradlab.tracking import Store
    from gradlab.tracking.reap import reap as reap_runs

    if args not in ([], ["--dry-run"]):
        _fail("usage: gradlab reap [--dry-run]   (--dry-run lists the runs it would mark KILLED)")
    for line in reap_runs(Store(), dry_run=bool(args)):
        print(line)
    return 0


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


COMMANDS = {"rerun": rerun, "reap": reap, "ui": ui}


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
  gradlab rerun RUN_ID             run a logged run's exact config again
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
