"""What ``dlm_sway.backends._instrumentation`` holds when swayscope instruments dlm-sway.

dlm-sway 0.1.0's backends, runner and tests import ``BackendInstrumentation``,
``BackendStats``, ``ForwardCache``, ``TraceWriter``, ``_TraceEvent``, ``_MISS``,
``_prompt_hash`` and ``CacheOp`` from that module. Here they are swayscope's
(the v0 API of :mod:`swayscope.instrumentation`), and every
``BackendInstrumentation`` dlm-sway builds — without arguments, as it does —
sends its events to the exporters of this process's :mod:`.session`.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

from swayscope.instrumentation import (
    _MISS,
    BackendStats,
    CacheOp,
    ForwardCache,
    TraceWriter,
    _prompt_hash,
    _TraceEvent,
)
from swayscope.instrumentation import BackendInstrumentation as _V0Instrumentation
from swayscope.integrations.dlm_sway.session import session

#: dlm-sway's default cache size (entries), kept so its cache behaves as it expects.
DLM_SWAY_CACHE_MAXSIZE = 256


class SessionInstrumentation(_V0Instrumentation):
    """swayscope's instrumentation, built the way dlm-sway builds its own, wired to the
    session: its exporters, its run id, its prompt-capture setting and prompt-hash key.
    dlm-sway finds it under its own name, ``BackendInstrumentation``."""

    def __init__(
        self,
        *,
        cache_maxsize: int = DLM_SWAY_CACHE_MAXSIZE,
        trace_path: Path | str | None = None,
        **kwargs: Any,
    ) -> None:
        current = session()
        kwargs.setdefault("capture_prompts", current.settings.capture_prompts)
        kwargs.setdefault("prompt_hash_key", current.settings.prompt_hash_key)
        kwargs.setdefault("run_id", current.run_id)
        exporters = [*kwargs.pop("exporters", ()), *current.exporters()]
        super().__init__(
            cache_maxsize=cache_maxsize, trace_path=trace_path, exporters=exporters, **kwargs
        )


#: The names of dlm-sway's module, each bound to swayscope's implementation.
NAMES: dict[str, Any] = {
    "BackendInstrumentation": SessionInstrumentation,
    "BackendStats": BackendStats,
    "CacheOp": CacheOp,
    "ForwardCache": ForwardCache,
    "TraceWriter": TraceWriter,
    "_MISS": _MISS,
    "_TraceEvent": _TraceEvent,
    "_prompt_hash": _prompt_hash,
}
#: What dlm-sway's module lists in ``__all__``.
PUBLIC = ["BackendInstrumentation", "BackendStats", "ForwardCache", "TraceWriter"]


def populate(module: ModuleType) -> None:
    """Fill dlm-sway's module with :data:`NAMES`, starting the session first (a bad
    telemetry setting stops the process here, before any model loads)."""
    session()
    module.__dict__.update(NAMES, __all__=list(PUBLIC), __doc__=__doc__)


__all__ = ["DLM_SWAY_CACHE_MAXSIZE", "NAMES", "PUBLIC", "SessionInstrumentation", "populate"]
