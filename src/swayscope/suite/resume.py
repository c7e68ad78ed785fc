"""Resume is running the same command again: what a run computed is in the disk cache, and
a run of the same work that never finished is found and linked to.

A run's *plan* is a digest of what decides its numbers: the model's content fingerprint
(base, adapter, dtype, device kind) and the spec without what only says where output
goes (telemetry, threads, the cache's own settings, model paths: the fingerprint names
the content). A run of a plan whose last run started and never finished (killed,
stopped) *resumes* it: it reads the finished part from the disk cache, links its
trace to that run's, and says so in its result (``resumed_from``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from swayscope.instrumentation import BackendInstrumentation
from swayscope.instrumentation.disk_cache import UnfinishedRun
from swayscope.instrumentation.scopes import RunHandle
from swayscope.suite.spec import LoadedSuite

#: Spec settings that change where output goes or how fast, never the numbers.
_NOT_DECIDING: dict[str, Any] = {
    "telemetry": True,
    "defaults": {"threads", "cache_dir", "disk_cache", "disk_cache_max_bytes"},
    "models": {"base", "adapter", "workers"},
    "sweep": True,
}


def plan_of(loaded: LoadedSuite, inst: BackendInstrumentation) -> str | None:
    """The plan digest of this run, or None without a disk cache or a fingerprinted model."""
    model = inst.fingerprint_of()
    if inst.disk is None or model is None:
        return None
    spec = loaded.spec.model_dump(mode="json", exclude=_NOT_DECIDING)
    text = json.dumps([model, spec], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(slots=True)
class Resumption:
    """What a run knows of its plan and of the run it resumes."""

    plan: str | None
    previous: UnfinishedRun | None

    @property
    def resumed_from(self) -> str | None:
        return self.previous.run_id if self.previous is not None else None

    @property
    def resumed_span(self) -> tuple[str, str] | None:
        p = self.previous
        return (p.trace_id, p.span_id) if p is not None and p.trace_id and p.span_id else None


def find_resumption(loaded: LoadedSuite, inst: BackendInstrumentation) -> Resumption:
    plan = plan_of(loaded, inst)
    previous = inst.disk.unfinished_run(plan) if plan is not None and inst.disk else None
    return Resumption(plan, previous)


@contextmanager
def recorded(
    inst: BackendInstrumentation, resumption: Resumption, run: RunHandle
) -> Iterator[None]:
    """Record ``run`` as running its plan in the cache file, and how it ended; a SIGKILL
    leaves it running there, so the next run of the plan resumes it."""
    disk, plan = inst.disk, resumption.plan
    if disk is None or plan is None:
        yield
        return
    disk.start_run(run.run_id, plan, run.trace_id, run.span_id)
    if resumption.previous is not None:  # this run takes over its work: nobody resumes it again
        disk.end_run(resumption.previous.run_id, "resumed")
    status = "interrupted"
    try:
        yield
        status = "ok"
    finally:
        disk.end_run(run.run_id, status)


def disk_summary(inst: BackendInstrumentation) -> dict[str, Any]:
    """The disk cache for a run's result (empty when it is off); its writes flushed first."""
    disk = inst.disk
    if disk is None:
        return {}
    inst.flush_disk()
    state = disk.stats()
    return {
        "dir": str(disk.directory),
        "entries": state.entries,
        "bytes": state.nbytes,
        "evictions": state.evictions,
        "written": state.written,
        "write_failures": state.write_failures,
        "enabled": state.enabled,
        "max_bytes": disk.max_bytes,
    }


__all__ = ["Resumption", "disk_summary", "find_resumption", "plan_of", "recorded"]
