"""A sweep as one call, for the command line and for Python alike: `run_sweep(overrides)` runs
Hydra's multirun (its sweeper and launcher: a grid, a search; batched, joblib, submitit) with
gradlab's sweep around it, and returns how it ended. Refused before any job ran, it raises a
typed error with gradlab's one-line message; a job that failed is counted, not raised."""

from __future__ import annotations

import sys
import traceback

from gradlab import signals
from gradlab.multirun import hydra_internals
from gradlab.multirun.context import SweepContext, inherited
from gradlab.multirun.sweep import WORKER_DIED, Sweep, SweepOutcome, current, running


def run_sweep(overrides: list[str], config_dir: str | None = None, config_name: str = "config") -> SweepOutcome:
    """Run the sweep that these Hydra overrides describe (`config_dir`/`config_name`: a sweep
    file, as -cd/-cn). Raises OverrideError (a key, option or file that does not exist),
    SweepRefused (jobs with bad values, a search that cannot work) or TrackingError (the store)
    before any run exists, and signals.Killed once a signal has ended its runs KILLED."""
    from hydra.core.global_hydra import GlobalHydra

    from gradlab.explain import COMPOSITION_ERRORS, explain
    from gradlab.options import OverrideError
    from gradlab.tracking import project_root

    from gradlab.config import register_configs

    register_configs()  # the schemas the config files fill
    args = list(overrides) + ([] if any(a.startswith("hydra.mode=") for a in overrides) else ["hydra.mode=MULTIRUN"])
    sweep = Sweep()
    with running(sweep):
        try:
            app = hydra_internals.hydra(project_root() / "conf", config_dir)
            hydra_internals.multirun(app, config_name, args, job, lambda cfg: sweep.begin(cfg, app.config_loader))
        except signals.Killed as e:
            sweep.abort(e.signum)
            raise
        except COMPOSITION_ERRORS as e:  # a key, option or file that does not exist; a trial that cannot be composed
            _stopped(sweep, e)
            if sweep.context is None:
                raise OverrideError(explain(e, ["-cd", config_dir, *args] if config_dir else args)) from None
            print(f"gradlab: error: {explain(e, args)}", file=sys.stderr)
        except Exception as e:  # noqa: BLE001 - once begun, what stops a sweep fails its parent and is said
            if sweep.context is None:  # refused before it began: the caller says it
                raise
            _stopped(sweep, e)
            _say(e)
        finally:
            outcome = sweep.finish()
            GlobalHydra.instance().clear()
    return outcome


def _stopped(sweep: Sweep, error: Exception) -> None:
    """What stopped a sweep fails its parent (a sweeper that crashed before any job left it empty)."""
    sweep.annotate({"gradlab.error.type": type(error).__name__, "gradlab.error.message": str(error) or repr(error)})


def _say(error: Exception) -> None:
    """A job that crashed (Hydra's sweeper re-raises it after every other job ran), a worker that
    died, a store that stopped the jobs: one line; a bug: its traceback."""
    from gradlab.config import ConfigError, DataError
    from gradlab.multirun.slurm import SlurmError
    from gradlab.tracking import TrackingError

    if type(error).__name__ in WORKER_DIED:  # a fault, not a bug
        print(f"gradlab: error: a worker process of the sweep's launcher died ({_exit_codes(error)}): the run of its job "
              "and those in flight beside it are KILLED, the jobs not started never ran", file=sys.stderr)
    elif isinstance(error, (ConfigError, DataError, TrackingError, SlurmError)):  # said above it, once, by its job
        print(f"gradlab: error: {error}", file=sys.stderr)
    else:
        traceback.print_exception(error)


def _exit_codes(error: Exception) -> str:
    """"exit codes {SIGKILL(-9)}", as loky's message gives them."""
    import re

    found = re.search(r"exit codes of the workers are (\{[^}]*\})", str(error))
    return f"exit codes {found.group(1)}" if found else type(error).__name__


# ---------------------------------------------------------------------------------- a job
def job(cfg) -> float:
    """One job of a sweep, for a launcher that runs jobs one by one (basic, joblib, submitit):
    its config recorded as a child of the sweep. The sweep is this process's when the launcher
    runs jobs here, else the one the worker process inherited (SweepContext)."""
    from hydra.core.hydra_config import HydraConfig

    from gradlab.config import to_typed
    from gradlab.record import Job, Origin, record

    hc = HydraConfig.get()
    here = current()
    ctx: SweepContext | None = here.context if here else inherited()
    typed = to_typed(cfg)
    origin = ctx.origin() if ctx else Origin(typed.tracking.experiment or "default")
    claim = here.trials.claim(hc.overrides.task) if here else None  # a search's trial, when this job is one
    with signals.ended_with(ctx.launcher_pid if ctx else None, _before_orphan_exit):
        rec = record(Job(typed, list(hc.overrides.task), claim.tags if claim else {}, claim.watch if claim else None),
                     origin)
    return rec.objective


def _before_orphan_exit() -> None:
    """A joblib worker whose launcher died leaves by os._exit: what its job sent is delivered
    first, and its spilled histories removed (no finalizer runs then)."""
    from gradlab import spill
    from gradlab.tracking import REGISTRY

    REGISTRY.shutdown()
    spill.remove_all()
