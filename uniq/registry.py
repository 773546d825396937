"""Names -> implementations: algorithms, tasks, and the evaluation of a policy.

The one module of ``uniq/`` (with ``cli.py`` and ``workflow.py``) that imports ``baselines/``
and ``envs/``; every other module of ``uniq/`` reaches them through the functions here
(:func:`get_method`, :func:`get_task`, :func:`evaluation`), so the dependency arrow between
the packages points one way (``tests/test_layering.py`` checks it).

Algorithms: ``name`` -> :class:`~uniq.method.Method` subclass.

UNIQ (``uniq/algorithm.py``) is registered here; every module of the ``baselines`` package
is discovered with :mod:`pkgutil`, so adding a baseline is adding one file. Extra folders of
method files (tests, a researcher's own methods outside the package) come from the
``extra_dirs`` argument or the ``UNIQ_EXTRA_METHODS`` environment variable (paths joined by
``os.pathsep``).

A module contributes every ``Method`` subclass *defined in it* with a non-empty ``name``;
two classes with the same name are an error. Discovery imports only the method modules
themselves (they import torch and ``uniq``'s shared modules, never the environments), and
runs once per process (:func:`clear_cache` forgets it).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import os
import pkgutil
import sys
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType

from uniq.method import ConfigError, Method

BUILTIN_MODULES = ("uniq.algorithm",)
"""Method modules outside ``baselines/``."""
BASELINE_PACKAGE = "baselines"
EXTRA_ENV = "UNIQ_EXTRA_METHODS"

_cache: dict[tuple[str, ...], dict[str, type[Method]]] = {}


def _methods_in(module: ModuleType) -> list[type[Method]]:
    """Method subclasses defined in ``module`` itself (not imported into it)."""
    return [
        obj
        for _, obj in inspect.getmembers(module, inspect.isclass)
        if issubclass(obj, Method)
        and obj is not Method
        and obj.__module__ == module.__name__
        and obj.name
    ]


def _baseline_modules() -> list[ModuleType]:
    package = importlib.import_module(BASELINE_PACKAGE)
    return [
        importlib.import_module(f"{BASELINE_PACKAGE}.{info.name}")
        for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name)
        if not info.name.startswith("_")
    ]


def _folder_modules(folder: Path) -> list[ModuleType]:
    """Import every ``*.py`` of ``folder`` under a private module name."""
    if not folder.is_dir():
        raise ConfigError(
            f"extra method folder {folder} does not exist; fix {EXTRA_ENV} or extra_dirs."
        )
    modules = []
    for path in sorted(folder.glob("*.py")):
        if path.name.startswith("_"):
            continue
        digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
        mod_name = f"_uniq_extra_methods_{digest}_{path.stem}"
        if mod_name not in sys.modules:
            spec = importlib.util.spec_from_file_location(mod_name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[mod_name] = module
            try:
                spec.loader.exec_module(module)
            except BaseException:
                del sys.modules[mod_name]
                raise
        modules.append(sys.modules[mod_name])
    return modules


def _extra_dirs(extra_dirs: Iterable[str | os.PathLike] | None) -> tuple[str, ...]:
    dirs = [str(d) for d in (extra_dirs or ())]
    dirs += [d for d in os.environ.get(EXTRA_ENV, "").split(os.pathsep) if d]
    return tuple(dirs)


def available(extra_dirs: Iterable[str | os.PathLike] | None = None) -> dict[str, type[Method]]:
    """Every registered method by name (UNIQ, ``baselines/*``, extra folders)."""
    key = _extra_dirs(extra_dirs)
    if key in _cache:
        return _cache[key]
    modules = [importlib.import_module(m) for m in BUILTIN_MODULES] + _baseline_modules()
    for folder in key:
        modules += _folder_modules(Path(folder))
    found: dict[str, type[Method]] = {}
    for module in modules:
        for cls in _methods_in(module):
            if cls.name in found and found[cls.name] is not cls:
                other = found[cls.name]
                raise ConfigError(
                    f"algorithm name {cls.name!r} is defined twice: {other.__module__}."
                    f"{other.__qualname__} and {cls.__module__}.{cls.__qualname__}; "
                    "rename one (the class attribute `name`)."
                )
            found[cls.name] = cls
    _cache[key] = dict(sorted(found.items()))
    return _cache[key]


def get_method(name: str, extra_dirs: Iterable[str | os.PathLike] | None = None) -> type[Method]:
    """The class registered as ``name``; an unknown name lists the known ones."""
    methods = available(extra_dirs)
    if name not in methods:
        raise ConfigError(
            f"unknown algorithm {name!r}; known algorithms: {', '.join(methods)}. "
            "A new method is a Method subclass with a `name` in a file under baselines/."
        )
    return methods[name]


def clear_cache() -> None:
    """Forget discovered methods (after changing ``UNIQ_EXTRA_METHODS`` or adding a file)."""
    _cache.clear()


def get_task(name: str):
    """The ``envs.tasks.TaskSpec`` registered as ``name``; an unknown name lists the known ones
    (as a :class:`ConfigError`)."""
    from envs.tasks import get_task as _get_task

    try:
        return _get_task(name)
    except KeyError as err:
        raise ConfigError(err.args[0]) from None


def evaluation() -> ModuleType:
    """``envs.evaluate``: where a policy meets the environments (imported on first use, so a
    module that only trains never loads them). The training loop's curve uses its
    ``curve_point`` and ``reference_returns``."""
    return importlib.import_module("envs.evaluate")
