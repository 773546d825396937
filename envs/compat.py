"""The one compatibility shim between safety-gymnasium 1.0.0 and Python 3.11.

safety-gymnasium 1.0.0 (its last release) declares dataclass fields such as
``color: np.ndarray = np.array([...])``. Python 3.11 rejects every unhashable dataclass
default ("mutable default ... use default_factory"), and numpy arrays are unhashable, so
``import safety_gymnasium`` fails. While the package is imported for the first time, we
turn each numpy-array default into ``field(default_factory=<copy of the array>)``: the
meaning is what the authors intended (each instance starts from the same values) and no
instance shares an array with another. Nothing outside that import is touched: the patch
is removed as soon as the import returns.

Import safety-gymnasium only through :func:`import_safety_gymnasium`.

Noise: importing gymnasium loads its plugin entry points, and gymnasium-robotics 1.2.2 is
loaded twice (once as ``gymnasium_robotics``, once through its entry point
``gymnasium_robotics.__init__``). Each load ``print``s (to ``sys.stderr``; it is not a
``warnings`` warning) a farama-notifications notice that the AdroitHand*Dense-v1 reward
functions changed. The suite uses no Adroit task, so during the import we capture stderr and
write back everything except the lines of that one notice. (A plain ``import gymnasium``
made elsewhere *before* this shim runs would still print it.)
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib
import io
import sys
from collections.abc import Iterator
from types import ModuleType

import numpy as np


@contextlib.contextmanager
def _array_defaults_as_factories() -> Iterator[None]:
    original = dataclasses._get_field  # type: ignore[attr-defined]

    @functools.wraps(original)
    def get_field(cls, a_name, a_type, *args, **kwargs):
        default = cls.__dict__.get(a_name, dataclasses.MISSING)
        if isinstance(default, np.ndarray):
            setattr(cls, a_name, dataclasses.field(default_factory=default.copy))
        return original(cls, a_name, a_type, *args, **kwargs)

    dataclasses._get_field = get_field  # type: ignore[attr-defined]
    try:
        yield
    finally:
        dataclasses._get_field = original  # type: ignore[attr-defined]


_ADROIT_NOTICE = "reward functions were updated in v1.2.1 without an environment version update"
"""A fragment of the gymnasium-robotics notice (farama_notifications) that we drop."""


@contextlib.contextmanager
def _without_adroit_notice() -> Iterator[None]:
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            yield
    finally:
        # Everything else printed to stderr meanwhile (warnings included) is passed on.
        kept = [
            line
            for line in captured.getvalue().splitlines(keepends=True)
            if _ADROIT_NOTICE not in line
        ]
        sys.stderr.write("".join(kept))


@functools.cache
def import_safety_gymnasium() -> ModuleType:
    """Import and return ``safety_gymnasium`` with the Python 3.11 dataclass fix applied."""
    with _without_adroit_notice(), _array_defaults_as_factories():
        return importlib.import_module("safety_gymnasium")
