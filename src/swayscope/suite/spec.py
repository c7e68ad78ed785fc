"""Suite spec: YAML → validated pydantic models, with errors that point into the file.

A spec that does not parse, an unknown key, a wrong type or an unknown probe
kind raises :class:`~swayscope.errors.SpecError` naming the file, the line, the
key path and the offending value, with a hint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from swayscope.errors import SpecError
from swayscope.probes.base import Probe, ProbeSpec


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelsSpec(_Strict):
    kind: Literal["hf", "dummy"] = "hf"
    base: Path | None = None
    """Local folder of the base model (hf), or a folder holding ``gguf_file``."""
    adapter: Path | None = None
    """Local folder of the PEFT LoRA adapter (hf)."""
    gguf_file: str | None = None
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    device: str = "auto"
    adapter_strength: float = 1.0
    """dummy only: how far ft is from base."""
    latency_ms: float = Field(default=0.0, ge=0)
    """dummy only: simulated compute time per prompt."""


class DefaultsSpec(_Strict):
    seed: int = Field(default=0, ge=0)
    top_k: int = Field(default=256, gt=0)
    max_batch_size: int = Field(default=32, gt=0)
    max_batch_tokens: int = Field(default=8192, gt=0)
    cache_size: int = Field(default=4096, gt=0)
    cache_max_bytes: int | None = Field(default=None, gt=0)


class TelemetrySpec(_Strict):
    trace: Path | None = None
    """JSONL trace file (appended)."""
    otlp_endpoint: str | None = None
    otlp_protocol: Literal["grpc", "http/protobuf"] | None = None
    metrics_address: str | None = None
    """Address for the metrics endpoint; 127.0.0.1 when unset."""
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    """Prometheus endpoint port; 0 picks a free one; None disables it."""
    metrics_linger_s: float | None = Field(default=None, ge=0)
    """Keep the metrics endpoint up this long after the run, until a last scrape."""
    metrics_wait_s: float | None = Field(default=None, ge=0)
    """At run start, wait up to this long for a scrape of the zeroed series."""
    pushgateway: str | None = None
    capture_prompts: bool = False


class SuiteSpec(_Strict):
    version: Literal[1] = 1
    name: str = "suite"
    models: ModelsSpec = ModelsSpec()
    defaults: DefaultsSpec = DefaultsSpec()
    telemetry: TelemetrySpec = TelemetrySpec()
    suite: list[dict[str, Any]]

    @field_validator("suite")
    @classmethod
    def _non_empty(cls, v: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if not v:
            raise ValueError("the suite lists no probes; add at least one under 'suite:'")
        return v


class LoadedSuite:
    """A validated spec plus its probes, built in order."""

    def __init__(self, spec: SuiteSpec, probes: list[Probe], source: str) -> None:
        self.spec = spec
        self.probes = probes
        self.source = source


def _locate(node: yaml.Node | None, loc: tuple[int | str, ...]) -> yaml.Node | None:
    """Walk a composed YAML node tree along a pydantic error location."""
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            values = [v for k, v in node.value if getattr(k, "value", None) == part]
            if not values:
                return node
            node = values[0]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                return node
            node = node.value[part]
        else:
            return node
    return node


def _format_errors(
    exc: ValidationError, root: yaml.Node | None, source: str, prefix: tuple[int | str, ...]
) -> str:
    lines = []
    for err in exc.errors():
        loc = prefix + tuple(err["loc"])
        node = _locate(root, loc)
        where = f"{source}:{node.start_mark.line + 1}" if node is not None else source
        key = ".".join(str(p) for p in loc) or "(top level)"
        value = err.get("input")
        shown = "" if err["type"] == "missing" else f" (got {value!r})"
        hint = ""
        if err["type"] == "extra_forbidden":
            hint = "; remove it or check its spelling"
        elif err["type"] == "missing":
            hint = "; add it"
        lines.append(f"{where}: {key}: {err['msg']}{shown}{hint}")
    return "invalid suite spec:\n  " + "\n  ".join(lines)


def load_suite_text(text: str, source: str = "<spec>") -> LoadedSuite:
    """Parse and validate a spec given as YAML text."""
    from swayscope.probes.registry import PROBE_KINDS

    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecError(f"{source}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise SpecError(
            f"{source}: a suite spec must be a YAML mapping with 'version', 'models' and "
            f"'suite' keys; got {type(data).__name__}"
        )
    try:
        spec = SuiteSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(_format_errors(exc, root, source, ())) from exc

    probes: list[Probe] = []
    labels: dict[str, int] = {}
    for i, item in enumerate(spec.suite):
        node = _locate(root, ("suite", i))
        where = f"{source}:{node.start_mark.line + 1}" if node is not None else source
        kind = item.get("kind") if isinstance(item, dict) else None
        cls = PROBE_KINDS.get(kind) if isinstance(kind, str) else None
        if cls is None:
            raise SpecError(
                f"{where}: suite.{i}.kind: unknown probe kind {kind!r}; "
                f"valid kinds: {', '.join(sorted(PROBE_KINDS))}"
            )
        try:
            probe_spec: ProbeSpec = cls.spec_class.model_validate(item)
        except ValidationError as exc:
            raise SpecError(_format_errors(exc, root, source, ("suite", i))) from exc
        if probe_spec.label in labels:
            raise SpecError(
                f"{where}: suite.{i}: probe name {probe_spec.label!r} is already used by "
                f"suite.{labels[probe_spec.label]}; give one of them a distinct 'name:'"
            )
        if cls.must_be_first and i != 0:
            raise SpecError(
                f"{where}: suite.{i}: probe kind {kind!r} calibrates the probes after it and "
                "must come first in the suite; move it to the top"
            )
        labels[probe_spec.label] = i
        probes.append(cls(probe_spec))
    return LoadedSuite(spec, probes, source)


def load_suite(path: Path) -> LoadedSuite:
    """Read, parse and validate a spec file; relative model paths resolve against it."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise SpecError(f"suite spec {str(path)!r} does not exist; check the path") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"cannot read suite spec {str(path)!r}: {exc}") from exc
    loaded = load_suite_text(text, str(path))
    models = loaded.spec.models
    rebased = {
        key: (path.parent / value)
        for key, value in (("base", models.base), ("adapter", models.adapter))
        if value is not None and not value.is_absolute()
    }
    if rebased:
        loaded.spec = loaded.spec.model_copy(update={"models": models.model_copy(update=rebased)})
    return loaded


__all__ = [
    "DefaultsSpec",
    "LoadedSuite",
    "ModelsSpec",
    "SuiteSpec",
    "TelemetrySpec",
    "load_suite",
    "load_suite_text",
]
