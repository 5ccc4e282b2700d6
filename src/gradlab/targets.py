"""A user's own code, named by a config as `package.module:Name` or `path/to/file.py:Name`.

`resolve(key, spec)` imports it and returns the object with the file it came from (its sha256
and source, which the run records so that a rerun can tell when the code changed). A file path is
relative to the working directory and is imported by path: no package, no sys.path entry. What
cannot be imported is a ConfigError naming `key`, with the import error's own line.

This is the one place gradlab imports code a config names; the optimizers, datasets and shipped
models are registries of names, and nothing else a user types is imported.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path

from gradlab.options import ConfigError

FORMS = "package.module:Name or path/to/file.py:Name"


@dataclass(frozen=True)
class Target:
    spec: str  # as the config names it
    obj: object
    path: str | None  # the file that defines it (None: a builtin or extension module)
    sha256: str | None
    source: str | None


def error_line(e: BaseException) -> str:
    """An exception's own last line (a SyntaxError says where), as `Type: message`."""
    lines = [line for line in str(e).strip().splitlines() if line.strip()]
    return f"{type(e).__name__}: {lines[-1] if lines else ''}".rstrip(": ")


def _by_path(key: str, spec: str, file: str):
    """The module of a .py file, imported under a name of its own made from its resolved path and
    contents: two files of the same name do not collide, and an edited file is imported afresh."""
    path = Path(file).expanduser()
    if not path.is_file():
        raise ConfigError(key, spec, f"no such file {file} (resolved to {path.resolve()})")
    data = path.read_bytes()
    name = "gradlab_user_" + hashlib.sha256(str(path.resolve()).encode() + data).hexdigest()[:16]
    if name in sys.modules:
        return sys.modules[name]
    module_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module  # dataclasses and pickling look a module up by its name while it runs
    try:
        module_spec.loader.exec_module(module)
    except Exception as e:  # noqa: BLE001 - whatever the user's file raises while it is imported
        del sys.modules[name]
        raise ConfigError(key, spec, f"importing {file} failed: {error_line(e)}") from None
    return module


def _by_name(key: str, spec: str, module_name: str):
    try:
        return importlib.import_module(module_name)
    except Exception as e:  # noqa: BLE001 - ModuleNotFoundError, or what the module raises while it is imported
        raise ConfigError(key, spec, f"cannot import {module_name}: {error_line(e)}") from None


def resolve(key: str, spec) -> Target:
    """The object `spec` names, with its file; ConfigError naming `key` if it cannot be had."""
    if not isinstance(spec, str) or spec.count(":") != 1 or not all(spec.split(":")):
        raise ConfigError(key, spec, f"must name your code as {FORMS}")
    where, name = spec.split(":")
    is_file = where.endswith(".py") or "/" in where
    module = _by_path(key, spec, where) if is_file else _by_name(key, spec, where)
    obj = module
    for part in name.split("."):  # Name, or Class.method
        if not hasattr(obj, part):
            defined = sorted(n for n in vars(module) if not n.startswith("_"))
            raise ConfigError(key, spec, f"{where} has no {name!r} (it defines {', '.join(defined) or 'nothing'})")
        obj = getattr(obj, part)
    file = getattr(module, "__file__", None)
    if file is None or not Path(file).is_file():
        return Target(spec, obj, None, None, None)
    data = Path(file).read_bytes()
    return Target(spec, obj, str(Path(file).resolve()), hashlib.sha256(data).hexdigest(), data.decode("utf-8", "replace"))


def spec_of(key: str, obj) -> str:
    """How a config names `obj`, a class or function the Python API was handed: `module:Name` where
    its module is importable by name, else `path/to/file.py:Name` (a module gradlab imported by
    path). Code defined in __main__ (a notebook, the script itself) or inside a function has no
    name to import it by: a ConfigError says to move it into a file of its own."""
    qualname, module_name = getattr(obj, "__qualname__", None), getattr(obj, "__module__", None)
    shown = getattr(obj, "__name__", repr(obj))
    if qualname is None or module_name is None:
        raise ConfigError(key, shown, f"must be a class or a function (or a string, {FORMS})")
    if "<locals>" in qualname:
        raise ConfigError(key, shown, "is defined inside a function; gradlab imports your code by name: "
                          "define it at the top level of a .py file")
    if module_name == "__main__":
        raise ConfigError(key, shown, "is defined in __main__ (a notebook, or the script that calls gradlab), which "
                          "gradlab cannot import by name without running it again: put it in a .py file of its "
                          "own, import it from there and pass that")
    module = sys.modules.get(module_name)
    if module_name.startswith("gradlab_user_") and getattr(module, "__file__", None):  # imported by path (_by_path)
        return f"{module.__file__}:{qualname}"
    return f"{module_name}:{qualname}"
