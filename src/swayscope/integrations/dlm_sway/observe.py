"""Scopes for dlm-sway's runs and probes, so spans, metrics and trace lines carry them.

dlm-sway's runner labels lookups with the probe's name but reports neither
runs nor verdicts to its instrumentation. :func:`instrument_runner` wraps the
two public functions of its runner module that the runner and its callers go
through: ``run`` becomes one ``inst.run(...)`` scope (the ``swayscope.run``
span, the run metrics), and the probes ``build_probe`` returns run each inside
one ``inst.probe(...)`` scope carrying dlm-sway's verdict and score. Results
are returned unchanged.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from swayscope import __version__
from swayscope.instrumentation.core import Instrumentation
from swayscope.instrumentation.redaction import redact_texts
from swayscope.instrumentation.vocabulary import PROBE_STATUSES, ProbeStatus

_STATUS: dict[str, ProbeStatus] = {s: s for s in PROBE_STATUSES}


def instrumentation_of(backend: object) -> Instrumentation | None:
    """The swayscope instrumentation behind a dlm-sway backend (its ``_inst``, where dlm-sway's
    own runner finds it); None for a backend without one (custom, two-model)."""
    inst = getattr(backend, "_inst", None)
    return inst if isinstance(inst, Instrumentation) else None


def _finite(value: object) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _error_message(inst: Instrumentation, spec: Any, result: Any) -> str:
    """dlm-sway's message for an error verdict, its prompts replaced by their hashes."""
    message = inst.redact(str(getattr(result, "message", "") or ""))
    if inst.capture_prompts:
        return message
    prompts = [p for p in getattr(spec, "prompts", None) or () if isinstance(p, str)]
    return redact_texts(message, prompts, inst.hash_prompt)


class ObservedProbe:
    """A dlm-sway probe whose ``run`` is one probe scope; everything else is the probe's."""

    def __init__(self, probe: Any) -> None:
        self._probe = probe

    def __getattr__(self, name: str) -> Any:
        return getattr(self._probe, name)

    def run(self, spec: Any, ctx: Any) -> Any:
        inst = instrumentation_of(getattr(ctx, "backend", None))
        if inst is None:
            return self._probe.run(spec, ctx)
        kind = str(getattr(spec, "kind", "") or "probe")
        with inst.probe(str(getattr(spec, "name", "") or kind), kind) as handle:
            result = self._probe.run(spec, ctx)
            verdict = getattr(result, "verdict", "")
            verdict = str(getattr(verdict, "value", verdict))
            handle.status = _STATUS.get(verdict, "error")
            handle.verdict = verdict
            handle.score = _finite(getattr(result, "score", None))
            if handle.status == "error":
                handle.error = _error_message(inst, spec, result) or None
        return result


def _observed_build(build: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(build)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        probe, spec = build(*args, **kwargs)
        return ObservedProbe(probe), spec

    return wrapped


def _observed_run(run: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(run)
    def wrapped(spec: Any, backend: Any, *args: Any, **kwargs: Any) -> Any:
        inst = instrumentation_of(backend)
        if inst is None:
            return run(spec, backend, *args, **kwargs)
        entries = [
            e for e in getattr(spec, "suite", None) or ()
            if isinstance(e, Mapping) and e.get("enabled", True) is not False
        ]
        ft = getattr(getattr(spec, "models", None), "ft", None)
        base = str(getattr(ft, "base", "") or "")
        if not inst.model_name:
            inst.model_name = base
        spec_path = str(kwargs.get("spec_path") or "")
        with inst.run(
            suite=Path(spec_path).stem if spec_path and spec_path != "<memory>" else "dlm-sway",
            base_model=base,
            adapter=str(getattr(ft, "adapter", "") or ""),
            version=__version__,
            probes=[str(e.get("name") or e.get("kind") or "probe") for e in entries],
        ):
            return run(spec, backend, *args, **kwargs)

    return wrapped


def instrument_runner(module: ModuleType) -> None:
    """Wrap ``module.run`` and ``module.build_probe`` (dlm-sway's runner) where present."""
    run = getattr(module, "run", None)
    if callable(run):
        module.run = _observed_run(run)  # type: ignore[attr-defined]
    build = getattr(module, "build_probe", None)
    if callable(build):
        module.build_probe = _observed_build(build)  # type: ignore[attr-defined]


__all__ = ["ObservedProbe", "instrument_runner", "instrumentation_of"]
