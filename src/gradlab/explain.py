"""Hydra's and OmegaConf's composition errors said as gradlab says its own: one line naming the
key, file or option, and what is allowed there.

    optimizer.lrr=0.1   ->  optimizer.lrr: not a key of optimizer=sgd; the keys are [...]
    optimizer=adamm     ->  optimizer=adamm: no such option; the options are adagrad, adam, ...
    -cn seed            ->  no sweep 'seed' in sweeps/; the sweeps are batch_size, ...
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException, SearchPathException
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from gradlab.config import SCHEMAS

# What Hydra raises for a command line it cannot compose (OmegaConf's errors come as their causes).
COMPOSITION_ERRORS = (ConfigCompositionException, MissingConfigException, OverrideParseException, SearchPathException)


def explain(error: BaseException, argv: list[str]) -> str:
    """One line for a composition error of the command line `argv`."""
    cause = error.__cause__ if isinstance(error.__cause__, OmegaConfBaseException) else error
    if isinstance(cause, (ConfigKeyError, ConfigAttributeError)) and "not in" in str(cause) and getattr(cause, "full_key", None):
        return _unknown_key(cause, argv)
    if isinstance(error, MissingConfigException):
        return _missing(error, argv)
    if isinstance(error, SearchPathException):  # -cd names a folder that is not there
        return f"{str(error).strip()}; -cd names the folder of the sweep files, e.g. -cd sweeps"
    if isinstance(cause, OmegaConfBaseException) and getattr(cause, "full_key", None):
        return f"{cause.full_key}: {str(cause).splitlines()[0]}"
    return " ".join(line.strip() for line in str(error).splitlines() if line.strip())


def _unknown_key(e: OmegaConfBaseException, argv: list[str]) -> str:
    """A key the chosen option's schema does not have: name the option and list its keys."""
    group, _, key = e.full_key.rpartition(".")
    schema = e.object_type
    chosen = [a.split("=", 1)[1] for a in argv if a.startswith(f"{group}=")]
    options = chosen[-1:] or sorted(o for o, s in SCHEMAS.get(group, {}).items() if s is schema)
    keys = sorted(f.name for f in dataclasses.fields(schema)) if dataclasses.is_dataclass(schema) else []
    where = f"{group}={options[0]}" if len(options) == 1 else f"{group} ({getattr(schema, '__name__', schema)})"
    listed = f"; the keys are {', '.join(keys)}" if keys else ""
    return f"{e.full_key}: not a key of {where}{listed}"


def _missing(e: MissingConfigException, argv: list[str]) -> str:
    """An option or a primary config (a sweep file) that does not exist: list what does."""
    missing = str(e.missing_cfg_file or "")
    if "/" in missing and e.options:  # group/option
        group, _, option = missing.rpartition("/")
        real = [o for o in e.options if not o.endswith("_schema")]
        return f"{group}={option}: no such option; the options are {', '.join(sorted(real))}"
    folder = _config_dir(argv)
    found = sorted(p.stem for p in Path(folder).glob("*.yaml")) if folder and Path(folder).is_dir() else []
    kind = "sweep" if folder and Path(folder).name == "sweeps" else "config"
    there = f"; the {kind}s are {', '.join(found)}" if found else ""
    return f"no {kind} {missing!r} in {folder or 'the config path'}{there}"


def _config_dir(argv: list[str]) -> str | None:
    for i, arg in enumerate(argv):
        for flag in ("-cd", "--config-dir"):
            if arg == flag and i + 1 < len(argv):
                return argv[i + 1]
            if arg.startswith(flag + "="):
                return arg.split("=", 1)[1]
    return None
