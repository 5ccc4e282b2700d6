"""The places where gradlab calls Hydra below its public API, kept here so that they are found
and checked together. Checked against hydra-core 1.3.2 to 1.3.8 (pyproject pins <1.4).

- `multirun`: Hydra's own `Hydra.multirun`, with the sweep's beginning between composing the
  config and starting the sweeper. Hydra calls a callback's on_multirun_start there, but it turns
  every exception a callback raises into a warning: a sweep refused before any job (a bad value
  in the grid, an unreachable store) must stop with its error instead.
- `keep_compositions`: Hydra's sweeper composes every job of a batch to validate it, the grid
  check composes it again and a launcher once more; each composition costs about 80 ms. Jobs
  differ mostly in values, not in config-group choices, so the config of each set of group
  choices is composed once, and a job's value overrides are applied by Hydra's own
  `ConfigLoaderImpl._apply_overrides_to_config`, as Hydra applies them after composing. Where
  that raises (a bad value), Hydra composes the job itself, with its own message.
- `typed_job`: what the grid check and the batched launcher need of a job is its typed config
  alone, without Hydra's node (most of a composed config). Each distinct value override of a
  sweep is applied once, to the choices' config, and what it changes in the typed config is
  kept; a job is the choices' typed config with its overrides' changes. Where two of a job's
  overrides change the same field, its overrides are applied together as above.
"""

from __future__ import annotations

import argparse
import copy
import os
import pickle
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
    kept = keep_compositions(app.config_loader)
    begin(cfg)
    callbacks = Callbacks(cfg)  # a user's own callbacks still run
    callbacks.on_multirun_start(config=cfg, config_name=config_name)
    sweeper = Plugins.instance().instantiate_sweeper(
        config=cfg, hydra_context=HydraContext(config_loader=app.config_loader, callbacks=callbacks),
        task_function=task_function)
    sweeper.validate_batch_is_legal = lambda batch: kept.check(sweeper.config, batch)
    sweeper.sweep(arguments=OmegaConf.to_container(cfg.hydra.overrides.task, resolve=False))
    callbacks.on_multirun_end(config=cfg, config_name=config_name)


class Compositions:
    """A multirun's jobs composed from the configs of their group choices (the module's docstring)."""

    def __init__(self, loader):
        from hydra.core.override_parser.overrides_parser import OverridesParser

        self.loader, self.hydra_compose = loader, loader.load_sweep_config
        self.parser = OverridesParser.create()
        self.lines: dict[str, tuple] = {}  # an override as written -> (Hydra's parse of it, whether it sets a value)
        self.bases: dict[tuple, object] = {}  # (config, choices) -> the choices' composed config
        self.typed_bases: dict[tuple, tuple] = {}  # (config, choices) -> (its config without hydra's node, typed and pickled)
        self.changes: dict[tuple, dict] = {}  # (config, choices, override) -> {field path: value}

    def _split(self, overrides: list[str]) -> tuple[list, tuple[str, ...]]:
        """A job's overrides: (its value overrides, parsed; its group choices and hydra overrides)."""
        values, choices = [], []
        for line in overrides:
            if line not in self.lines:
                o = self.parser.parse_rule(line, "override")
                self.lines[line] = o, not o.is_hydra_override() and not self.loader.repository.group_exists(o.key_or_group)
            o, sets_value = self.lines[line]
            (values if sets_value else choices).append(o)
        return values, tuple(o.input_line for o in choices)

    def _base(self, master_config, choices: tuple[str, ...]):
        key = (id(master_config), choices)
        if key not in self.bases:
            self.bases[key] = self.hydra_compose(master_config, list(choices))
        return self.bases[key]

    def full(self, master_config, overrides: list[str]):
        """The job's composed config, Hydra's node included (for a launcher that runs it as Hydra does)."""
        from hydra._internal.config_loader_impl import get_overrides_dirname

        cfg, composed_by_hydra = self._overridden(master_config, overrides, self._base)
        if composed_by_hydra:  # its node is Hydra's own
            return cfg
        task = [o for o, _ in map(self.lines.get, overrides) if not o.is_hydra_override()]
        cfg.hydra.overrides.task = [o.input_line for o in task]
        names = cfg.hydra.job.config.override_dirname
        cfg.hydra.job.override_dirname = get_overrides_dirname(overrides=task, kv_sep=names.kv_sep,
                                                               item_sep=names.item_sep, exclude_keys=names.exclude_keys)
        return cfg

    def typed(self, master_config, overrides: list[str]):
        """The job's typed config (gradlab.config.to_typed of its composition); raises what
        composing it raises, in Hydra's or gradlab's words."""
        from gradlab.config import to_typed

        try:
            values, choices = self._split(overrides)
            _, base = self._typed_base(master_config, choices)
            changed: dict[tuple, object] = {}
            for o in values:
                change = self._change(master_config, choices, o)
                if not changed.keys().isdisjoint(change):
                    raise _Overlap
                changed.update(change)
        except Exception:  # noqa: BLE001 - composed as a whole: Hydra's message, or both overrides applied in order
            return to_typed(self._applied(master_config, overrides))
        job = pickle.loads(base)  # a fresh copy: the job's own
        for path, value in changed.items():
            _set_field(job, path, copy.deepcopy(value))
        return job

    def _typed_base(self, master_config, choices: tuple[str, ...]) -> tuple:
        from omegaconf import open_dict

        from gradlab.config import to_typed

        key = (id(master_config), choices)
        if key not in self.typed_bases:
            cfg = copy.deepcopy(self._base(master_config, choices))
            with open_dict(cfg):
                del cfg["hydra"]
            self.typed_bases[key] = (cfg, pickle.dumps(to_typed(cfg)))
        return self.typed_bases[key]

    def _change(self, master_config, choices: tuple[str, ...], override) -> dict:
        """What one value override changes in the choices' typed config: {field path: value}."""
        from hydra._internal.config_loader_impl import ConfigLoaderImpl

        from gradlab.config import to_typed

        key = (id(master_config), choices, override.input_line)
        if key not in self.changes:
            cfg, base = self._typed_base(master_config, choices)
            cfg = copy.deepcopy(cfg)
            ConfigLoaderImpl._apply_overrides_to_config([override], cfg)
            self.changes[key] = dict(_differences(pickle.loads(base), to_typed(cfg)))
        return self.changes[key]

    def _applied(self, master_config, overrides: list[str]):
        """The job's config without Hydra's node, its value overrides applied in order."""
        return self._overridden(master_config, overrides, lambda master, choices: self._typed_base(master, choices)[0])[0]

    def _overridden(self, master_config, overrides: list[str], base) -> tuple[object, bool]:
        """(a copy of `base(master_config, choices)` with the job's value overrides applied in
        order, False), or (Hydra's own composition of the job, True) where they cannot be."""
        from hydra._internal.config_loader_impl import ConfigLoaderImpl

        try:
            values, choices = self._split(overrides)
            cfg = copy.deepcopy(base(master_config, choices))
            ConfigLoaderImpl._apply_overrides_to_config(values, cfg)
            return cfg, False
        except Exception:  # noqa: BLE001 - Hydra composes it, and says what is wrong in its words
            return self.hydra_compose(master_config, overrides), True

    def check(self, master_config, batch) -> None:
        """Hydra's Sweeper.validate_batch_is_legal: each job composes (a composition error raises;
        a bad value is the launcher's to report, for its job), at the cost of its typed config."""
        from gradlab.config import ConfigError

        for overrides in batch:
            try:
                self.typed(master_config, list(overrides))
            except ConfigError:
                pass

    def forget(self) -> None:
        self.bases.clear(), self.typed_bases.clear(), self.changes.clear(), self.lines.clear()


class _Overlap(Exception):
    """Two of a job's overrides change one field: they are applied together, in order."""


def _differences(before, after, path: tuple = ()):
    """(field path, value) for each field of two typed configs that differs (in value or type)."""
    import dataclasses

    if dataclasses.is_dataclass(before) and type(before) is type(after):
        for f in dataclasses.fields(before):
            yield from _differences(getattr(before, f.name), getattr(after, f.name), (*path, f.name))
    elif type(before) is not type(after) or before != after:
        yield path, after


def _set_field(obj, path: tuple, value) -> None:
    for name in path[:-1]:
        obj = getattr(obj, name)
    setattr(obj, path[-1], value)


def keep_compositions(loader) -> Compositions:
    """Make composing a multirun's jobs cheap (see the module's docstring): Hydra's sweepers and
    launchers get `Compositions.full`, gradlab's checks `typed_job`. Callers only read what they
    get (the basic launcher sets the job's id on it before running it, once)."""
    kept = getattr(loader.load_sweep_config, "compositions", None)
    if kept is None:
        kept = Compositions(loader)
        full = kept.full
        load_sweep_config = lambda master_config, sweep_overrides: full(master_config, sweep_overrides)  # noqa: E731
        load_sweep_config.compositions = kept
        loader.load_sweep_config = load_sweep_config
    return kept


def typed_job(loader, master_config, overrides: list[str]):
    """A job's typed config (gradlab.config.to_typed of Hydra's composition of it)."""
    return keep_compositions(loader).typed(master_config, list(overrides))


def forget_compositions(loader) -> None:
    """Let the kept compositions go (a launcher that has its jobs' typed configs needs no more)."""
    kept = getattr(loader.load_sweep_config, "compositions", None)
    if kept is not None:
        kept.forget()
