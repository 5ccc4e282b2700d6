"""The places where gradlab calls Hydra below its public API, kept here so that they are found
and checked together. Checked against hydra-core 1.3.2 to 1.3.8 (pyproject pins <1.4).

- `multirun`: Hydra's own `Hydra.multirun`, with the sweep's beginning between composing the
  config and starting the sweeper. Hydra calls a callback's on_multirun_start there, but it turns
  every exception a callback raises into a warning: a sweep refused before any job (a bad value
  in the grid, an unreachable store) must stop with its error instead.
- `keep_compositions`: Hydra's sweeper composes every job of a batch to validate it, the grid
  check composes it again and a launcher once more; each composition costs about 80 ms. Jobs
  differ mostly in values, not in config-group choices, so each job is composed as the config of
  its group choices alone (composed once for all jobs that share them) with its value overrides
  applied by Hydra's own `ConfigLoaderImpl._apply_overrides_to_config`, as Hydra applies them
  after composing. Where that raises (a bad value), Hydra composes the job itself, with its own
  message.
"""

from __future__ import annotations

import argparse
import copy
import os
from pathlib import Path
from typing import Callable

from omegaconf import DictConfig, OmegaConf


def parse(argv: list[str]) -> argparse.Namespace:
    """The command line as Hydra's own parser reads it (-m, -cd, -cn, --cfg, overrides...)."""
    from hydra._internal.utils import get_args_parser

    return get_args_parser().parse_args(argv)


def hydra(conf: Path, config_dir: str | None):
    """Hydra, its primary config folder `conf`, with `config_dir` (-cd) searched first."""
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_automatic_config_search_path
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import SearchPathException
    from hydra.core.config_search_path import SearchPathQuery

    search_path = create_automatic_config_search_path(None, None, str(conf))
    if config_dir is not None:
        folder = os.path.abspath(config_dir)
        if not os.path.isdir(folder):
            raise SearchPathException(f"Additional config directory '{folder}' not found")
        search_path.prepend(provider="command-line", path=f"file://{folder}", anchor=SearchPathQuery(provider="schema"))
    GlobalHydra.instance().clear()
    return Hydra.create_main_hydra2(task_name="gradlab", config_search_path=search_path)


def is_multirun(app, config_name: str, overrides: list[str]) -> bool:
    """Whether the config asks for a multirun (a sweep file sets hydra.mode)."""
    from hydra.types import RunMode

    return app.get_mode(config_name=config_name, overrides=overrides) == RunMode.MULTIRUN


def multirun(app, config_name: str, overrides: list[str], task_function, begin: Callable[[DictConfig], None]):
    """Hydra's multirun (Hydra.multirun), the sweep begun once its config is composed."""
    from hydra._internal.callbacks import Callbacks
    from hydra.core.plugins import Plugins
    from hydra.types import HydraContext, RunMode

    cfg = app.compose_config(config_name=config_name, overrides=overrides, with_log_configuration=True,
                             run_mode=RunMode.MULTIRUN)
    keep_compositions(app.config_loader)
    begin(cfg)
    callbacks = Callbacks(cfg)  # a user's own callbacks still run
    callbacks.on_multirun_start(config=cfg, config_name=config_name)
    sweeper = Plugins.instance().instantiate_sweeper(
        config=cfg, hydra_context=HydraContext(config_loader=app.config_loader, callbacks=callbacks),
        task_function=task_function)
    sweeper.sweep(arguments=OmegaConf.to_container(cfg.hydra.overrides.task, resolve=False))
    callbacks.on_multirun_end(config=cfg, config_name=config_name)


def keep_compositions(loader) -> None:
    """Make composing a grid's jobs cheap, for this multirun (see the module's docstring).
    Callers only read what they get (the basic launcher sets the job's id on it before running
    it, once)."""
    compose = loader.load_sweep_config
    if getattr(compose, "keeps", False):
        return
    from hydra._internal.config_loader_impl import ConfigLoaderImpl, get_overrides_dirname
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser, kept = OverridesParser.create(), {}

    def by_values(master_config, sweep_overrides: list[str]):
        parsed = parser.parse_overrides(list(sweep_overrides))
        values = [o for o in parsed if not o.is_hydra_override() and not loader.repository.group_exists(o.key_or_group)]
        choices = [o.input_line for o in parsed if o not in values]
        base_key = (id(master_config), "choices", tuple(choices))
        if base_key not in kept:
            kept[base_key] = compose(master_config, choices)
        cfg = copy.deepcopy(kept[base_key])
        ConfigLoaderImpl._apply_overrides_to_config(values, cfg)
        task = [o for o in parsed if not o.is_hydra_override()]
        cfg.hydra.overrides.task = [o.input_line for o in task]
        names = cfg.hydra.job.config.override_dirname
        cfg.hydra.job.override_dirname = get_overrides_dirname(overrides=task, kv_sep=names.kv_sep,
                                                               item_sep=names.item_sep, exclude_keys=names.exclude_keys)
        return cfg

    def load_sweep_config(master_config, sweep_overrides):
        key = (id(master_config), tuple(sweep_overrides))
        if key not in kept:
            try:
                kept[key] = by_values(master_config, sweep_overrides)
            except Exception:  # noqa: BLE001 - Hydra composes it, and says what is wrong in its words
                kept[key] = compose(master_config, sweep_overrides)
        return kept[key]

    load_sweep_config.keeps = True
    load_sweep_config.forget = kept.clear
    loader.load_sweep_config = load_sweep_config


def forget_compositions(loader) -> None:
    """Let the kept compositions go (a launcher that has its jobs' typed configs needs no more)."""
    forget = getattr(loader.load_sweep_config, "forget", None)
    if forget is not None:
        forget()
