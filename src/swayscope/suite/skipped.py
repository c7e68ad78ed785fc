"""A suite entry that is not run: it stands in the run in its place and reports ``skip``
with the reason (another tool's probe kind that swayscope has no probe for, an entry that
file turns off)."""

from __future__ import annotations

import functools
from typing import ClassVar

from swayscope.probes.base import Probe, ProbeContext, ProbeResult, ProbeSpec


class SkippedSpec(ProbeSpec):
    """The entry's name and kind as written, and why it does not run."""

    reason: str


class SkippedProbe(Probe):
    """Runs nothing; its result is ``skip`` with the reason. ``kind`` is the entry's own
    (a subclass per kind, :func:`skipped_probe`), so reports and telemetry name it."""

    kind: ClassVar[str] = "skipped"
    spec_class = SkippedSpec
    score_label: ClassVar[str] = "no score (skipped)"
    score_unit: ClassVar[str] = ""

    def run(self, ctx: ProbeContext) -> ProbeResult:
        assert isinstance(self.spec, SkippedSpec)
        return self.result("skip", message=self.spec.reason)


@functools.cache
def _skipped_class(kind: str) -> type[SkippedProbe]:
    return type(f"Skipped_{kind}", (SkippedProbe,), {"kind": kind})


def skipped_probe(name: str, kind: str, reason: str) -> Probe:
    """The stand-in for entry ``name`` of kind ``kind``, which is not run because ``reason``."""
    return _skipped_class(kind)(SkippedSpec(kind=kind, name=name, reason=reason))


__all__ = ["SkippedProbe", "SkippedSpec", "skipped_probe"]
