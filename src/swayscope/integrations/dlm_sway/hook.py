"""The import hook behind ``swayscope sway``: dlm-sway's instrumentation becomes swayscope's.

Installed by the ``sitecustomize`` that ``swayscope sway`` puts on the child's
PYTHONPATH, and only when :data:`TELEMETRY_ENV` is set (the opt-in). When
dlm-sway imports them, and only then:

- ``dlm_sway.backends._instrumentation`` resolves to a module holding the
  names of :mod:`.shim` (swayscope's classes under dlm-sway's names);
- ``dlm_sway.suite.runner`` loads as usual, then :mod:`.observe` wraps its
  ``run`` and ``build_probe`` so each run and probe is a scope with a verdict.

Module level imports only the standard library (and the names of the
environment variables): this runs at every start of an opted-in Python, most
of which never touch dlm-sway.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import os
import sys
from collections.abc import Mapping, Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import Any

from swayscope.integrations.dlm_sway.environment import TELEMETRY_ENV

#: dlm-sway's instrumentation module (the v0 API), replaced by :mod:`.shim`.
SHIMMED_MODULE = "dlm_sway.backends._instrumentation"
#: dlm-sway's suite runner, whose runs and probes get scopes.
RUNNER_MODULE = "dlm_sway.suite.runner"


class _ShimLoader(importlib.abc.Loader):
    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        return None

    def exec_module(self, module: ModuleType) -> None:
        from swayscope.integrations.dlm_sway import shim

        shim.populate(module)


class _ObservedLoader(importlib.abc.Loader):
    """The runner's own loader, then :func:`.observe.instrument_runner` on the module."""

    def __init__(self, inner: importlib.abc.Loader) -> None:
        self._inner = inner

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        return self._inner.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._inner.exec_module(module)
        from swayscope.integrations.dlm_sway import observe

        observe.instrument_runner(module)

    def __getattr__(self, name: str) -> Any:
        # get_code, get_source, is_package …: what tools ask a loader, answered by the real one.
        return getattr(self._inner, name)


class DlmSwayFinder(importlib.abc.MetaPathFinder):
    """Finds :data:`SHIMMED_MODULE` (as the shim) and :data:`RUNNER_MODULE` (observed)."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname == SHIMMED_MODULE:
            return importlib.util.spec_from_loader(fullname, _ShimLoader())
        if fullname != RUNNER_MODULE:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec: ModuleSpec | None = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _ObservedLoader(spec.loader)
                return spec
        return None


def install(env: Mapping[str, str] | None = None) -> bool:
    """Put the finder first on ``sys.meta_path`` when :data:`TELEMETRY_ENV` is set; True if so.

    Idempotent. Without the variable nothing changes.
    """
    if TELEMETRY_ENV not in (os.environ if env is None else env):
        return False
    if not any(isinstance(f, DlmSwayFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, DlmSwayFinder())
    return True


__all__ = ["RUNNER_MODULE", "SHIMMED_MODULE", "DlmSwayFinder", "install"]
