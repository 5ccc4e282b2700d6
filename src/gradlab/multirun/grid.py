"""A sweep's jobs before any runs: what it varies, every job of a grid, each job's config
checked (composition, types, ranges, data files, devices), so that one bad value stops the
sweep before any job has run."""

from __future__ import annotations

import hashlib
import json

from omegaconf import DictConfig, OmegaConf

from gradlab.options import SweepRefused

BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
OPTUNA_SWEEPER = "hydra_plugins.gradlab_optuna.optuna_sweeper.OptunaSweeper"


def params(config: DictConfig) -> list[str]:
    """The sweep as Hydra's basic sweeper sees it: hydra.sweeper.params, then the command line."""
    given = [f"{k}={v}" for k, v in (config.hydra.sweeper.get("params") or {}).items()]
    return given + list(config.hydra.overrides.task)


def varied_keys(config: DictConfig) -> list[str]:
    """The keys a sweep varies (a grid's lists, a search's distributions), in the order it names
    them; a later plain value of a key (the command line) fixes it."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    keys: dict[str, None] = {}
    for o in OverridesParser.create().parse_overrides(params(config)):
        if o.is_sweep_override():
            keys.setdefault(o.key_or_group, None)  # where the sweep first names it
        else:
            keys.pop(o.key_or_group, None)
    return list(keys)


def is_search(config: DictConfig) -> bool:
    return config.hydra.sweeper.get("_target_") == OPTUNA_SWEEPER


def jobs(config: DictConfig) -> list[list[str]] | None:
    """Every job's overrides, or None when the sweeper chooses them as it goes (Optuna)."""
    if config.hydra.sweeper.get("_target_") != BASIC_SWEEPER:
        return None
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    overrides = OverridesParser.create().parse_overrides(params(config))
    return [list(job) for batch in BasicSweeper.split_arguments(overrides, None) for job in batch]


def sweep_hash(config: DictConfig) -> str:
    """What makes two runs of a sweep the same sweep (a resume finds its parent by it)."""
    given = sorted(p for p in params(config) if not p.startswith("tracking.skip_finished"))
    return hashlib.sha256(json.dumps([config.hydra.job.config_name, given]).encode()).hexdigest()[:16]


def check(config: DictConfig, loader, overrides: list[list[str]]) -> list[tuple[list[str], str]]:
    """(overrides, message) for each job whose config cannot run; builds nothing that lasts."""
    from gradlab import training
    from gradlab.config import validate
    from gradlab.explain import COMPOSITION_ERRORS, explain
    from gradlab.multirun.hydra_internals import typed_job

    bad = []
    for job in overrides:
        try:
            typed = typed_job(loader, config, job)
            validate(typed)
            training.setup(typed)
        except COMPOSITION_ERRORS as e:  # a key or option the job names that does not exist: said as the CLI says it
            bad.append((job, explain(e, job)))
        except Exception as e:  # ConfigError, DataError and the rest
            bad.append((job, str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__))
    return bad


def refuse_bad_jobs(config: DictConfig, loader, name: str, overrides: list[list[str]] | None) -> None:
    """Raise SweepRefused listing the grid's jobs (or the search's corner) that do not check out."""
    _refuse_bad_launcher(config)
    if is_search(config):
        _refuse_bad_search(config, loader)
    bad = check(config, loader, overrides) if overrides is not None else []
    if bad:
        lines = [f"  [{' '.join(o)}]: {message}" for o, message in bad]
        raise SweepRefused(f"sweep {name!r}: {len(bad)} of {len(overrides)} jobs have bad values; nothing was run:\n"
                           + "\n".join(lines))


# The batched launcher's counts: (key, the least it may be, what it counts).
BATCHED_COUNTS = (("max_batch", 1, "configurations a batch trains at once"),)


def _refuse_bad_launcher(config: DictConfig) -> None:
    """A launcher setting that cannot work stops the sweep before its parent run exists."""
    launcher = config.hydra.launcher
    if not str(launcher.get("_target_", "")).endswith("BatchedLauncher"):
        return
    for key, low, what in BATCHED_COUNTS:
        value = launcher.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise SweepRefused(f"hydra.launcher.{key}={value!r} is out of range: at least {low} (the {what})")


def _refuse_bad_search(config: DictConfig, loader) -> None:
    """A search whose settings cannot work stops before its parent run exists."""
    from gradlab.multirun.search import Plan, SearchError

    try:
        plan = Plan.of(OmegaConf.to_container(config.hydra.sweeper, resolve=True), list(config.hydra.overrides.task))
    except SearchError as e:
        raise SweepRefused(str(e)) from None
    bad = check(config, loader, plan.probes())
    if bad:
        overrides, message = bad[0]
        raise SweepRefused(f"search {config.hydra.job.config_name!r}: a trial [{' '.join(overrides)}] cannot run: "
                           f"{message}; nothing was run")
    from gradlab.multirun.search import check_storage, default_storage
    from gradlab.tracking import tracking_uri

    try:
        check_storage(config.hydra.sweeper.get("storage") or default_storage(tracking_uri()))
    except SearchError as e:
        raise SweepRefused(str(e)) from None
