"""The `gradlab` command: Hydra composes the config, `record` trains and records it.

    gradlab [overrides...]            one run (Hydra overrides; -m for a multirun; --cfg job prints)
    gradlab rerun RUN_ID              run a logged run's exact config again
    gradlab reap [--dry-run]          mark runs whose process died hard (SIGKILL) as KILLED

User mistakes print one line naming the field and the fix, and exit 2; nothing is recorded.
"""

from __future__ import annotations

import os
import signal
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from gradlab.config import ConfigError, DataError, register_configs, to_typed
from gradlab.record import Killed, from_container, record, stamp
from gradlab.tracking import Recorder, TrackingError, project_root

register_configs()
USER_ERRORS = (ConfigError, DataError, TrackingError)


def _fail(message: str) -> None:
    print(f"gradlab: error: {message}", file=sys.stderr)
    sys.exit(2)


@hydra.main(version_base="1.3", config_path=str(project_root() / "conf"), config_name="config")
def _hydra_main(cfg: DictConfig) -> float:
    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    try:
        from gradlab import sweep

        typed = to_typed(cfg)
        # In a sweep every job nests under the parent run, so it lives in the parent's experiment.
        experiment = (sweep.sweep_experiment() or typed.tracking.experiment
                      or hc.runtime.choices.get("experiment") or "default")
        rec = record(typed, experiment=experiment, overrides=list(hc.overrides.task),
                     parent_run_id=sweep.parent_run_id(), sweep=sweep.sweep_name())
        return rec.objective
    except USER_ERRORS as e:
        if multirun:  # Hydra records this job as failed and goes on with the others
            raise
        _fail(str(e))


def rerun(args: list[str]) -> int:
    """Run a logged run's resolved config.yaml again, into the same experiment."""
    if len(args) != 1 or args[0].startswith("-"):
        _fail("usage: gradlab rerun RUN_ID   (the run id is on the run's page in the UI, or in the summary)")
    from gradlab.tracking import Store

    store = Store()
    try:
        text = store.download_text(args[0], "config.yaml")
    except TrackingError as e:
        _fail(str(e))
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
    from gradlab.tracking import Store, reap_runs

    dry = "--dry-run" in args
    for line in reap_runs(Store(), dry_run=dry):
        print(line)
    return 0


def _terminate(signum, frame):
    raise Killed(signum)


def main() -> None:
    stamp("main")
    # SIGTERM unwinds like Ctrl-C wherever it lands (between a sweep's jobs too), so that what is
    # open gets closed: a run, a sweep's parent run.
    signal.signal(signal.SIGTERM, _terminate)
    argv = sys.argv[1:]
    try:
        if argv[:1] == ["rerun"]:
            sys.exit(rerun(argv[1:]))
        if argv[:1] == ["reap"]:
            sys.exit(reap(argv[1:]))
        from gradlab import sweep

        stopped = False
        try:
            _hydra_main()
        except (Killed, KeyboardInterrupt):
            stopped = True  # not finished: below, the sweep's parent run is marked KILLED
            raise
        finally:  # also after Hydra's exit 1 for a failed job, which skips on_multirun_end
            failed = 0 if stopped else sweep.finish()
            Recorder.shutdown()
        if failed:
            sys.exit(1)
    except (Killed, KeyboardInterrupt) as e:
        from gradlab import sweep

        signum = e.signum if isinstance(e, Killed) else signal.SIGINT
        sweep.abort(signum)
        # Die by the signal, as a killed process does (exit status 128 + signum in a shell).
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
    except USER_ERRORS as e:
        _fail(str(e))
