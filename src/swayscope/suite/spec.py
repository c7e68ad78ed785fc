"""Suite spec: YAML → validated pydantic models, with errors that point into the file.

A spec that does not parse, an unknown key, a wrong type or an unknown probe
kind raises :class:`~swayscope.errors.SpecError` naming the file, the line, the
key path and the offending value, with a hint.

Another tool's suite format is read by a :class:`SuiteFormat` the caller passes
in: it recognises its files and translates them into this format, saying where
each key came from, so every error still points into the file the user wrote.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import PydanticCustomError

from swayscope.backends.api import (
    DEFAULT_MAX_BATCH_SIZE,
    DEFAULT_MAX_BATCH_TOKENS,
    DEFAULT_PREFIX_CACHE_BYTES,
    MAX_SEED,
    RESOURCE_UNIT,
)
from swayscope.backends.threads import too_many_threads, usable_cpus
from swayscope.errors import SpecError, SwayscopeError, shown
from swayscope.home import default_cache_dir
from swayscope.instrumentation.disk_cache import DEFAULT_DISK_CACHE_BYTES
from swayscope.instrumentation.vocabulary import DEFAULT_TOP_K
from swayscope.probes.base import Probe
from swayscope.probes.registry import ProbeOrderError, build_probe, check_order
from swayscope.probes.sections import TrainingDocument, load_document
from swayscope.suite.skipped import skipped_probe


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WorkersSpec(_Strict):
    """``models.workers``: compute on a pool of Ray workers, each holding the model; the
    run keeps the one cache, the stats and the exporters and sends only misses."""

    count: int = Field(default=2, gt=0)
    """How many workers (each one copy of the model: one per GPU, or N on CPUs); at most
    what the cluster's CPUs and GPUs hold, checked before any worker is made."""
    cpus: float = Field(default=1.0, ge=RESOURCE_UNIT, allow_inf_nan=False)
    """CPUs each worker reserves; its torch threads: ``defaults.threads``, else these."""
    gpus: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    """GPUs each worker reserves (a fraction shares one)."""
    address: str = "local"
    """``local`` (a cluster started for the run, on 127.0.0.1), ``auto``, ``host:port``
    or ``ray://host:port``."""

    @field_validator("gpus")
    @classmethod
    def _whole_units(cls, v: float) -> float:
        if 0 < v < RESOURCE_UNIT:
            raise ValueError(
                f"a worker reserves no GPU (0) or at least {RESOURCE_UNIT:g} of one (Ray "
                "counts GPUs in ten-thousandths)"
            )
        return v


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
    workers: WorkersSpec | None = None
    """hf only: a pool of Ray workers instead of the model in this process."""


#: ``defaults.cache_dir`` when the spec says nothing: the swayscope home's ``cache/``.
DEFAULT_CACHE_DIR_SETTING = Path("$SWAYSCOPE_HOME/cache")


class DefaultsSpec(_Strict):
    seed: int = Field(default=0, ge=0, le=MAX_SEED)
    top_k: int = Field(default=DEFAULT_TOP_K, gt=0)
    max_batch_size: int = Field(default=DEFAULT_MAX_BATCH_SIZE, gt=0)
    max_batch_tokens: int = Field(default=DEFAULT_MAX_BATCH_TOKENS, gt=0)
    cache_size: int = Field(default=4096, gt=0)
    cache_max_bytes: int | None = Field(default=None, gt=0)
    prefix_cache_max_bytes: int = Field(default=DEFAULT_PREFIX_CACHE_BYTES, ge=0)
    """Byte budget of the shared-prefix store (hf); 0 turns shared-prefix reuse off."""
    threads: int | None = Field(default=None, gt=0)
    """CPU threads the model computes with, at most the CPUs this process may use
    (affinity mask, cgroup quota); default: ``OMP_NUM_THREADS`` when set, else all of them
    (:func:`~swayscope.backends.threads.choose_threads`)."""
    cache_dir: Path | None = DEFAULT_CACHE_DIR_SETTING
    """Folder of the durable forward cache (relative: to the spec's folder); default
    ``$SWAYSCOPE_HOME/cache``; ``null`` turns the disk cache off."""
    disk_cache: bool = True
    """False turns the disk cache off (``--no-disk-cache``)."""
    disk_cache_max_bytes: int = Field(default=DEFAULT_DISK_CACHE_BYTES, gt=0)
    """The disk cache's bound; past it the least recently used entries go."""

    def disk_cache_dir(self) -> Path | None:
        """Where this run's disk cache is, or None when it is off."""
        if not self.disk_cache or self.cache_dir is None:
            return None
        if self.cache_dir == DEFAULT_CACHE_DIR_SETTING:
            return default_cache_dir()
        return self.cache_dir.expanduser()

    @field_validator("threads")
    @classmethod
    def _within_cores(cls, v: int | None) -> int | None:
        limit = usable_cpus()
        if v is not None and v > limit:
            raise PydanticCustomError("too_many_threads", too_many_threads(limit))
        return v


class TelemetrySpec(_Strict):
    """The ``telemetry:`` block; its keys are the names of
    :class:`~swayscope.instrumentation.settings.TelemetrySettings`, checked there."""

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
    prompt_hash_key: str | None = None
    """Key of the keyed prompt hash; prefer ``$SWAYSCOPE_PROMPT_HASH_KEY`` to a key in a file."""


class SweepSpec(_Strict):
    """The ``sweep:`` block: the adapters ``swayscope sweep`` runs the suite on, against
    ``models.base`` (``--adapters`` replaces them)."""

    adapters: list[str]
    """Adapter folders or glob patterns (relative ones: against the spec file's folder)."""

    @field_validator("adapters")
    @classmethod
    def _some(cls, v: list[str]) -> list[str]:
        if not v or not all(isinstance(p, str) and p.strip() for p in v):
            raise ValueError(
                "list the adapter folders (or glob patterns such as ckpt/step-*) to sweep"
            )
        return v


class SuiteSpec(_Strict):
    version: Literal[1] = 1
    name: str = "suite"
    models: ModelsSpec = ModelsSpec()
    defaults: DefaultsSpec = DefaultsSpec()
    telemetry: TelemetrySpec = TelemetrySpec()
    sweep: SweepSpec | None = None
    dlm_source: Path | None = None
    """The training document the section probes read (dlm-sway's key): a markdown file
    (each heading starts a section) or a ``.dlm`` document; relative to the spec file."""
    suite: list[dict[str, Any]]

    @field_validator("suite")
    @classmethod
    def _non_empty(cls, v: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if not v:
            raise ValueError("the suite lists no probes; add at least one under 'suite:'")
        return v


KeyPath = tuple[int | str, ...]


@dataclass(frozen=True, slots=True)
class SkippedEntry:
    """An entry of another tool's suite that is not run: the run reports it as ``skip``,
    with ``reason``, in its place."""

    position: int
    """Its place in the run: before the probe at this index of the translated suite."""
    path: KeyPath
    """Its key path in the source file."""
    where: str
    """``file:line`` of it."""
    name: str
    kind: str
    reason: str
    unsupported: bool
    """True when swayscope cannot run its kind (``--strict`` refuses it); False when the
    file itself turns it off."""
    entry: Mapping[str, Any]
    """The entry as written."""


@dataclass(frozen=True, slots=True)
class Translation:
    """A suite in another tool's format, translated into this one."""

    data: dict[str, Any]
    """The suite as this format's mapping (what :class:`SuiteSpec` validates)."""
    origin: Callable[[KeyPath], KeyPath]
    """Key path in ``data`` → key path of what it came from in the source file."""
    format: str
    notes: tuple[str, ...] = ()
    """What the translation left out or approximated, each naming ``file:line``."""
    skipped: tuple[SkippedEntry, ...] = ()
    """Entries that are not run, in source order."""


class SuiteFormat(Protocol):
    """Another tool's suite format: recognise its files, translate them into this format."""

    name: str

    def detect(self, data: Mapping[str, Any]) -> bool:
        """True when ``data`` (a parsed YAML mapping) is a suite in this format."""
        ...

    def translate(
        self, data: Mapping[str, Any], root: yaml.Node | None, source: str
    ) -> Translation:
        """Translate, or raise :class:`SpecError` naming ``file:line`` of what cannot be."""
        ...


class _Locator:
    """Where a key path of the (possibly translated) spec sits in the source file."""

    def __init__(
        self, root: yaml.Node | None, source: str, origin: Callable[[KeyPath], KeyPath] | None
    ) -> None:
        self.root = root
        self.source = source
        self.origin = origin

    def path(self, path: KeyPath) -> KeyPath:
        return self.origin(path) if self.origin is not None else path

    def where(self, path: KeyPath) -> str:
        return where_in(self.root, self.path(path), self.source)

    def key(self, path: KeyPath) -> str:
        return ".".join(str(p) for p in self.path(path)) or "(top level)"


class LoadedSuite:
    """A validated spec plus its probes, built in order, and where each key sits in the file."""

    def __init__(
        self,
        spec: SuiteSpec,
        probes: list[Probe],
        source: str,
        root: yaml.Node | None = None,
        translation: Translation | None = None,
        document: TrainingDocument | None = None,
    ) -> None:
        self.spec = spec
        self.probes = probes
        self.source = source
        self.translation = translation
        """Set when the file was in another tool's format."""
        self.document = document
        """The training document ``dlm_source`` names, read and split into sections."""
        self._locate = _Locator(root, source, translation.origin if translation else None)

    def where(self, *path: int | str) -> str:
        """``file:line`` of the key at ``path`` (or of its closest parent); the file alone if
        the spec has no YAML behind it. For a translated spec, the line it came from."""
        return self._locate.where(path)


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


def where_in(root: yaml.Node | None, path: KeyPath, source: str) -> str:
    """``file:line`` of the key at ``path`` in a composed YAML tree (or of its closest parent)."""
    node = _locate(root, path)
    return f"{source}:{node.start_mark.line + 1}" if node is not None else source


def _format_errors(exc: ValidationError, locate: _Locator, prefix: KeyPath) -> str:
    lines = []
    for err in exc.errors():
        loc = prefix + tuple(err["loc"])
        where = locate.where(loc)
        key = locate.key(loc)
        got = "" if err["type"] == "missing" else f" (got {shown(err.get('input'))})"
        hint = ""
        if err["type"] == "extra_forbidden":
            hint = "; remove it or check its spelling"
        elif err["type"] == "missing":
            hint = "; add it"
        lines.append(f"{where}: {key}: {err['msg']}{got}{hint}")
    return "invalid suite spec:\n  " + "\n  ".join(lines)


#: The most values a spec may hold once YAML aliases are expanded: far above any real
#: suite, far below what a few hundred bytes of nested aliases can expand to.
MAX_SPEC_VALUES = 100_000
#: The largest spec file, checked before it is parsed: far above any real suite (a
#: thousand probes of a hundred prompts each is about 5 MB), far below what makes parsing
#: and validation take minutes and gigabytes.
MAX_SPEC_BYTES = 8 * 1024 * 1024
_MERGE_TAG = "tag:yaml.org,2002:merge"


def _key_text(path: KeyPath) -> str:
    return ".".join(str(p) for p in path) or "(top level)"


def _check_tree(
    root: yaml.Node | None, source: str, loader: yaml.CSafeLoader | yaml.SafeLoader
) -> None:
    """Refuse a spec whose aliases expand past :data:`MAX_SPEC_VALUES` (an alias bomb), or
    with a key given twice in one mapping (YAML keeps the last one silently: a second
    ``telemetry:`` block would override the reviewed one)."""
    count = 0
    stack: list[tuple[yaml.Node, KeyPath]] = [(root, ())] if root is not None else []
    while stack:
        node, path = stack.pop()
        count += 1
        if count > MAX_SPEC_VALUES:
            raise SpecError(
                f"{source}: the spec expands to more than {MAX_SPEC_VALUES} values "
                "(nested YAML aliases?); write the values out or split the suite"
            )
        if isinstance(node, yaml.MappingNode):
            lines: dict[object, int] = {}
            for key, value in node.value:
                count += 1
                if isinstance(key, yaml.ScalarNode) and key.tag != _MERGE_TAG:
                    name = loader.construct_object(key)
                    line = key.start_mark.line + 1
                    if name in lines:
                        raise SpecError(
                            f"{source}:{line}: {_key_text((*path, name))}: the key is given "
                            f"twice in one mapping (first at {source}:{lines[name]}); YAML "
                            "would keep only the last one. Remove or merge one of them"
                        )
                    lines[name] = line
                    stack.append((value, (*path, name)))
                else:
                    stack.extend(((key, path), (value, path)))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((item, (*path, i)) for i, item in enumerate(node.value))


def _check_bytes(size: int, source: str) -> None:
    if size > MAX_SPEC_BYTES:
        raise SpecError(
            f"{source}: the spec is over the {MAX_SPEC_BYTES // 1024 // 1024} MB limit on a "
            "spec's size (MAX_SPEC_BYTES); split the suite"
        )


def _parse(text: str, source: str) -> tuple[yaml.Node | None, Any]:
    """Compose ``text`` once, check the tree, then build the data from it."""
    try:
        raw = text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise SpecError(
            f"{source}:{text.count(chr(10), 0, exc.start) + 1}: the text is not valid Unicode "
            "(a lone surrogate); fix the file's encoding"
        ) from None
    _check_bytes(len(raw), source)
    # libyaml's parser where PyYAML has it: 0.2 s for an 8 MB spec, against 7 s.
    loader = (yaml.CSafeLoader if yaml.__with_libyaml__ else yaml.SafeLoader)(raw)
    try:
        root = loader.get_single_node()
        _check_tree(root, source, loader)
        data = loader.construct_document(root) if root is not None else None
    finally:
        loader.dispose()
    return root, data


def _unencodable(data: object, path: tuple[int | str, ...] = ()) -> tuple[int | str, ...] | None:
    """The key path of the first string that is not valid Unicode (a lone surrogate)."""
    if isinstance(data, str):
        try:
            data.encode("utf-8")
        except UnicodeEncodeError:
            return path
        return None
    items = data.items() if isinstance(data, dict) else (
        enumerate(data) if isinstance(data, list) else ()
    )
    for key, value in items:
        found = _unencodable(key, path) if isinstance(key, str) else None
        found = found or _unencodable(value, (*path, key))
        if found is not None:
            return found
    return None


def load_suite_text(
    text: str,
    source: str = "<spec>",
    *,
    formats: Sequence[SuiteFormat] = (),
    base_dir: Path | None = None,
) -> LoadedSuite:
    """Parse and validate a spec given as YAML text; ``formats`` read other tools' suites.
    The training document (``dlm_source``) is read here, a relative path against
    ``base_dir`` (the spec file's folder; the current directory when None)."""
    try:
        root, data = _parse(text, source)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        what = "; ".join(str(part) for part in (exc.context, exc.problem) if part)
        raise SpecError(f"{where}: not valid YAML: {what or exc}") from exc
    except yaml.YAMLError as exc:
        raise SpecError(f"{source}: not valid YAML: {exc}") from exc
    bad = _unencodable(data)
    if bad is not None:
        key = ".".join(str(p) for p in bad) or "(top level)"
        raise SpecError(
            f"{where_in(root, bad, source)}: {key}: the text is not valid Unicode (a lone "
            "surrogate such as \\udcff); fix the escape or the file's encoding"
        )
    if not isinstance(data, dict):
        raise SpecError(
            f"{source}: a suite spec must be a YAML mapping with 'version', 'models' and "
            f"'suite' keys; got {type(data).__name__}"
        )
    translation = next(
        (fmt.translate(data, root, source) for fmt in formats if fmt.detect(data)), None
    )
    if translation is not None:
        data = translation.data
    locate = _Locator(root, source, translation.origin if translation else None)
    try:
        spec = SuiteSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(_format_errors(exc, locate, ())) from exc
    probes = [_build_probe(item, i, locate) for i, item in enumerate(spec.suite)]
    try:
        check_order(probes)
    except ProbeOrderError as exc:
        path = ("suite", exc.index)
        raise SpecError(f"{locate.where(path)}: {locate.key(path)}: {exc}") from None
    # Where each probe of the run is in the file: (file:line, key path).
    places = [(locate.where(("suite", i)), locate.key(("suite", i))) for i in range(len(probes))]
    for entry in reversed(translation.skipped if translation else ()):
        probes.insert(entry.position, skipped_probe(entry.name, entry.kind, entry.reason))
        places.insert(entry.position, (entry.where, ".".join(str(p) for p in entry.path)))
    labels: dict[str, int] = {}
    for i, probe in enumerate(probes):
        label = probe.spec.label
        if label in labels:
            raise SpecError(
                f"{places[i][0]}: {places[i][1]}: probe name {label!r} is already used by "
                f"{places[labels[label]][1]}; give one of them a distinct 'name:'"
            )
        labels[label] = i
    document = None
    if spec.dlm_source is not None:
        doc_path = spec.dlm_source.expanduser()
        if not doc_path.is_absolute() and base_dir is not None:
            doc_path = base_dir / doc_path
        spec = spec.model_copy(update={"dlm_source": doc_path})
        try:
            document = load_document(doc_path)
        except SpecError as exc:
            raise SpecError(f"{locate.where(('dlm_source',))}: {exc}") from None
    return LoadedSuite(spec, probes, source, root, translation, document)


def _build_probe(item: object, i: int, locate: _Locator) -> Probe:
    """Build ``suite[i]`` through the probe registry; errors located in the file."""
    try:
        return build_probe(item)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise SpecError(_format_errors(exc, locate, ("suite", i))) from exc
    except SwayscopeError as exc:
        key = "kind" if isinstance(item, dict) and "kind" in item else None
        path: KeyPath = ("suite", i, key) if key else ("suite", i)
        raise SpecError(f"{locate.where(path)}: {locate.key(path)}: {exc}") from None


def override_defaults(
    loaded: LoadedSuite, overrides: Mapping[str, object], sources: Mapping[str, str]
) -> None:
    """Put ``overrides`` (None: not given) over the spec's ``defaults:``, checked like the
    spec; an error names the override by ``sources`` (its flag)."""
    given = {k: v for k, v in overrides.items() if v is not None}
    if not given:
        return
    try:
        defaults = DefaultsSpec.model_validate({**loaded.spec.defaults.model_dump(), **given})
    except ValidationError as exc:
        err = exc.errors()[0]
        name = str(err["loc"][0]) if err["loc"] else "defaults"
        raise SpecError(
            f"{sources.get(name, name)}: {err['msg']} (got {shown(err.get('input'))})"
        ) from None
    loaded.spec = loaded.spec.model_copy(update={"defaults": defaults})


def override_workers(
    loaded: LoadedSuite, overrides: Mapping[str, object], sources: Mapping[str, str]
) -> None:
    """Put ``overrides`` (None: not given) over the spec's ``models.workers:`` (creating
    it: a flag alone asks for a pool), checked like the spec; an error names the flag."""
    given = {k: v for k, v in overrides.items() if v is not None}
    if not given:
        return
    models = loaded.spec.models
    current = models.workers.model_dump() if models.workers is not None else {}
    try:
        workers = WorkersSpec.model_validate({**current, **given})
    except ValidationError as exc:
        err = exc.errors()[0]
        name = str(err["loc"][0]) if err["loc"] else "workers"
        raise SpecError(
            f"{sources.get(name, name)}: {err['msg']} (got {shown(err.get('input'))})"
        ) from None
    loaded.spec = loaded.spec.model_copy(
        update={"models": models.model_copy(update={"workers": workers})}
    )


def load_suite(path: Path, *, formats: Sequence[SuiteFormat] = ()) -> LoadedSuite:
    """Read, parse and validate a spec file; relative model paths and sweep patterns resolve
    against it (a format translator may resolve them its own way and hand back absolute
    ones)."""
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_SPEC_BYTES + 1)  # a bigger file is refused unread
        _check_bytes(len(raw), str(path))
        text = raw.decode("utf-8")
    except FileNotFoundError as exc:
        raise SpecError(f"suite spec {str(path)!r} does not exist; check the path") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"cannot read suite spec {str(path)!r}: {exc}") from exc
    loaded = load_suite_text(text, str(path), formats=formats, base_dir=path.parent)
    models = loaded.spec.models
    rebased = {
        key: (path.parent / value)
        for key, value in (("base", models.base), ("adapter", models.adapter))
        if value is not None and not value.is_absolute()
    }
    update: dict[str, Any] = {}
    if rebased:
        update["models"] = models.model_copy(update=rebased)
    sweep = loaded.spec.sweep
    if sweep is not None:
        patterns = [str(path.parent / p) for p in (os.path.expanduser(p) for p in sweep.adapters)]
        update["sweep"] = sweep.model_copy(update={"adapters": patterns})
    defaults = loaded.spec.defaults
    cache = defaults.cache_dir
    if (
        cache is not None and cache != DEFAULT_CACHE_DIR_SETTING
        and not cache.expanduser().is_absolute()
    ):
        update["defaults"] = defaults.model_copy(update={"cache_dir": path.parent / cache})
    if update:
        loaded.spec = loaded.spec.model_copy(update=update)
    return loaded


__all__ = [
    "DefaultsSpec",
    "KeyPath",
    "LoadedSuite",
    "MAX_SPEC_BYTES",
    "ModelsSpec",
    "SkippedEntry",
    "SuiteFormat",
    "SuiteSpec",
    "SweepSpec",
    "TelemetrySpec",
    "Translation",
    "WorkersSpec",
    "load_suite",
    "load_suite_text",
    "override_defaults",
    "override_workers",
    "where_in",
]
