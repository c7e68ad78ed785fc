"""Probe kinds by name, and building a probe from one entry of a suite's ``suite:`` list."""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import Any

from swayscope.errors import SpecError, shown
from swayscope.probes.adapter_ablation import AdapterAblationProbe
from swayscope.probes.adapter_revert import AdapterRevertProbe
from swayscope.probes.base import Probe
from swayscope.probes.calibration_drift import CalibrationDriftProbe
from swayscope.probes.cluster_kl import ClusterKLProbe
from swayscope.probes.delta_kl import DeltaKLProbe
from swayscope.probes.leakage import LeakageProbe
from swayscope.probes.null_adapter import NullAdapterProbe
from swayscope.probes.paraphrase_invariance import ParaphraseInvarianceProbe
from swayscope.probes.perplexity_shift import PerplexityShiftProbe
from swayscope.probes.preference_flip import PreferenceFlipProbe
from swayscope.probes.prompt_collapse import PromptCollapseProbe
from swayscope.probes.section_internalization import SectionInternalizationProbe
from swayscope.probes.style_fingerprint import StyleFingerprintProbe

#: Every probe kind a suite may name, in the order the demo suite runs them.
PROBE_KINDS: dict[str, type[Probe]] = {
    cls.kind: cls
    for cls in (
        NullAdapterProbe,
        DeltaKLProbe,
        AdapterAblationProbe,
        PromptCollapseProbe,
        PerplexityShiftProbe,
        CalibrationDriftProbe,
        SectionInternalizationProbe,
        LeakageProbe,
        ParaphraseInvarianceProbe,
        PreferenceFlipProbe,
        StyleFingerprintProbe,
        AdapterRevertProbe,
        ClusterKLProbe,
    )
}


def probe_class(kind: object) -> type[Probe]:
    """The class for ``kind``; SpecError naming the kind and listing the valid ones."""
    valid = ", ".join(PROBE_KINDS)
    if not isinstance(kind, str) or not kind:
        raise SpecError(f"probe needs a 'kind' (one of: {valid}); got {shown(kind)}")
    try:
        return PROBE_KINDS[kind]
    except KeyError:
        close = difflib.get_close_matches(kind, PROBE_KINDS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise SpecError(
            f"unknown probe kind {shown(kind)}; valid kinds: {valid}{hint}"
        ) from None


def build_probe(spec_dict: Mapping[str, Any]) -> Probe:
    """Validate one probe entry (a mapping with ``kind``) and build its probe.

    Raises :class:`~swayscope.errors.SpecError` for a missing or unknown kind, and
    pydantic's ``ValidationError`` for bad fields (the runner adds the YAML location).
    """
    if not isinstance(spec_dict, Mapping):
        raise SpecError(
            f"a probe entry must be a mapping with a 'kind'; got {type(spec_dict).__name__} "
            f"{shown(spec_dict)}"
        )
    cls = probe_class(spec_dict.get("kind"))
    spec = cls.spec_class.model_validate(dict(spec_dict))
    return cls(spec)


class ProbeOrderError(SpecError):
    """A probe that must come first does not; ``index`` is where it is."""

    def __init__(self, message: str, index: int) -> None:
        super().__init__(message)
        self.index = index


def check_order(probes: Sequence[Probe]) -> None:
    """:class:`ProbeOrderError` when a probe that must come first (``null_adapter``) does not."""
    for i, probe in enumerate(probes):
        if i > 0 and probe.must_be_first:
            raise ProbeOrderError(
                f"probe {probe.spec.label!r} ({probe.kind}) must be the first probe of the "
                f"suite: it calibrates the probes after it, so it must come first, and it is "
                f"number {i + 1}; move it to the top",
                i,
            )


__all__ = ["PROBE_KINDS", "ProbeOrderError", "build_probe", "check_order", "probe_class"]
