"""dlm-sway's suite format (``sway.yaml``, dlm-sway 0.1.0), read as a swayscope suite.

A file is read as dlm-sway's when its ``models:`` holds two model blocks,
``base:`` and ``ft:`` (swayscope's ``models:`` holds ``kind``, ``base`` and
``adapter`` directly). Each dlm-sway field either becomes a swayscope field
(``runs`` → ``n``, ``assert_mean_gte`` → ``threshold``, …; dlm-sway's default
is written out where swayscope's differs, so a threshold keeps dlm-sway's
value), is ignored because it only steers something swayscope does not have
(the composite score, the on-disk calibration cache), or has no swayscope
counterpart, in which case it is accepted only at dlm-sway's default value.

An entry of a dlm-sway kind swayscope has no probe for is skipped: it stays in
the run, in its place, as a ``skip`` with the reason (``--strict`` refuses the
suite instead: :func:`refuse_unsupported`); so is an entry the file turns off
(``enabled: false``), as dlm-sway does. A kind that swayscope's probes gain
runs under the same name, its fields as written. Anything else — a kind
dlm-sway does not have, a field swayscope cannot honour, a model it cannot load
— stops with :class:`~swayscope.errors.SpecError` naming ``file:line``, the
kind or field, what is supported and the nearest swayscope equivalent. Nothing
is skipped silently: what is ignored or approximated comes back as notes.

Paths: dlm-sway resolves ``base``, ``adapter`` and ``dlm_source`` against the current
directory, so they are made absolute here the same way.
"""

from __future__ import annotations

import difflib
import os
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from swayscope.errors import SpecError, shown
from swayscope.integrations.dlm_sway.field_rules import (
    ABSENT,
    COLLAPSE_LENGTHS_FIELD,
    COMMON_FIELDS,
    DEFAULT_RULES,
    DTYPES,
    KINDS,
    MODEL_KEYS,
    NEAREST_KIND,
    SWAY_KINDS,
    SWAY_SPEC_VERSION,
    TOP_K,
    TOP_LEVEL,
    WEIGHT,
    Ignored,
    KindRules,
    Maps,
    Rule,
)
from swayscope.probes.registry import PROBE_KINDS
from swayscope.suite.spec import KeyPath, LoadedSuite, SkippedEntry, Translation, where_in

#: The dlm-sway release whose format this module reads.
DLM_SWAY_VERSION = "0.1.0"
FORMAT_NAME = "dlm-sway"
#: Said with the skipped entries: how to refuse them instead.
STRICT_HINT = "--strict refuses a suite with entries swayscope cannot run"


def kind_rules(kind: str) -> KindRules | None:
    """How dlm-sway's ``kind`` is read: its rules, else (a kind that swayscope's probes have
    under the same name) its fields as written; None when swayscope cannot run it."""
    rules = KINDS.get(kind)
    if rules is not None or kind not in PROBE_KINDS:
        return rules
    fields = PROBE_KINDS[kind].spec_class.model_fields
    return KindRules(kind, {TOP_K: Maps(TOP_K), **{
        name: Maps(name) for name in fields if name not in ("kind", "name", TOP_K)
    }})


def _same(a: Any, b: Any) -> bool:
    """Equal as YAML values: a list equals a tuple, ``true`` is not ``1``."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return list(a) == list(b)
    return bool(a == b)


def is_dlm_sway_suite(data: Mapping[str, Any]) -> bool:
    """dlm-sway's layout: ``models:`` holds a ``ft:`` block (or a ``base:`` block)."""
    models = data.get("models")
    return isinstance(models, Mapping) and (
        "ft" in models or isinstance(models.get("base"), Mapping)
    )


def _local_path(value: Any) -> str:
    """A model path as dlm-sway reads it: ``~`` expanded, relative to the current directory."""
    return str(Path(str(value)).expanduser().resolve())


@dataclass
class _Translator:
    """One translation: the swayscope mapping being built, where each key came from,
    and what could not be translated (all errors are reported together)."""

    root: yaml.Node | None
    source: str
    origins: dict[KeyPath, KeyPath] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def where(self, path: KeyPath) -> str:
        return where_in(self.root, path, self.source)

    @staticmethod
    def key(path: KeyPath) -> str:
        return ".".join(str(p) for p in path)

    def error(self, path: KeyPath, message: str) -> None:
        self.errors.append(f"{self.where(path)}: {self.key(path)}: {message}")

    def note(self, path: KeyPath, message: str) -> None:
        self.notes.append(f"{self.where(path)}: {self.key(path)}: {message}")

    def origin(self, path: KeyPath) -> KeyPath:
        for n in range(len(path), 0, -1):
            found = self.origins.get(path[:n])
            if found is not None:
                return found + path[n:]
        return path

    def unknown(self, path: KeyPath, known: Sequence[str], what: str) -> None:
        name = str(path[-1])
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        fields = ", ".join(known)
        self.error(path, f"{name!r} is not a field of {what} (its fields: {fields}){hint}")

    def apply(
        self,
        rules: Mapping[str, Rule],
        given: Mapping[str, Any],
        sway_path: KeyPath,
        out: dict[str, Any],
        origins: dict[str, KeyPath],
        native_defaults: Mapping[str, Any],
    ) -> None:
        """Read ``given`` (a dlm-sway mapping at ``sway_path``) into ``out`` by ``rules``;
        ``origins`` gets, for each key of ``out``, the dlm-sway key path it came from."""
        for name, rule in rules.items():
            path = (*sway_path, name)
            value = given.get(name, ABSENT)
            if isinstance(rule, Maps):
                origins[rule.to] = path
                if value is not ABSENT:
                    out[rule.to] = value
                elif rule.default is not ABSENT and not _same(
                    rule.default, native_defaults.get(rule.to, ABSENT)
                ):
                    out[rule.to] = rule.default
            elif value is ABSENT:
                continue
            elif isinstance(rule, Ignored):
                self.note(path, f"ignored: {rule.why}")
            elif _same(value, rule.value):
                self.note(path, f"accepted at dlm-sway's default; {rule.differs}")
            else:
                self.error(
                    path,
                    f"{shown(value)} is not supported: {rule.differs}. swayscope runs it only "
                    f"at dlm-sway's default ({shown(rule.value)}); nearest equivalent: "
                    f"{rule.nearest} (swayscope convert writes the spec to adjust)",
                )

    # -- the parts of a suite -------------------------------------------------------------

    def models(self, data: Mapping[str, Any]) -> dict[str, Any]:
        models = data.get("models")
        out: dict[str, Any] = {"kind": "hf"}
        errors_before = len(self.errors)
        if not isinstance(models, Mapping):
            self.error(("models",), "needs base: and ft: model blocks")
            return out
        for key in models:
            if key not in ("base", "ft"):
                self.unknown(("models", key), ("base", "ft"), "dlm-sway's models")
        blocks: dict[str, Mapping[str, Any]] = {}
        for side in ("base", "ft"):
            block = models.get(side)
            if not isinstance(block, Mapping):
                self.error(("models", side), f"needs a model block (kind, base, adapter, …); "
                           f"got {shown(block)}")
                continue
            blocks[side] = block
            for key, value in block.items():
                path = ("models", side, key)
                if key not in MODEL_KEYS:
                    self.unknown(path, MODEL_KEYS, "a dlm-sway model")
                elif key == "kind" and value != "hf":
                    self.error(path, f"{shown(value)} is not supported: swayscope loads "
                               "Hugging Face models with a PEFT LoRA adapter; nearest "
                               "equivalent: kind: hf with the adapter's PEFT folder")
                elif key == "trust_remote_code" and value is not False:
                    self.error(path, f"{shown(value)} is not supported: swayscope runs only "
                               "architectures transformers ships; nearest equivalent: none")
                elif key in ("entry_point", "endpoint") and value is not None:
                    self.note(path, "ignored: it is used only by dlm-sway's custom and api "
                              "backends")
        ft, base = blocks.get("ft"), blocks.get("base")
        if ft is None or base is None:
            return out
        self.origins[("models",)] = ("models", "ft")
        if base.get("adapter") is not None:
            self.note(("models", "base", "adapter"), "ignored, as dlm-sway ignores it in "
                      "differential mode (defaults.differential: true): the base side is ft's "
                      "model with the adapter off")
        for side, block in (("ft", ft), ("base", base)):
            if block.get("base") is None:
                self.error(("models", side, "base"), "missing: give the base model's folder")
        if ft.get("adapter") is None:
            self.error(("models", "ft", "adapter"), "missing: give the PEFT LoRA adapter's "
                       "folder")
        for side, key in (("ft", "base"), ("base", "base"), ("ft", "adapter")):
            value = blocks[side].get(key)
            if value is not None and (not isinstance(value, str) or "\0" in value):
                self.error(("models", side, key), f"{shown(value)} is not a folder path: give "
                           "the folder as one string (with no NUL byte)")
        if len(self.errors) > errors_before:
            return out
        if _local_path(base["base"]) != _local_path(ft["base"]):
            self.error(("models", "ft", "base"), "differs from models.base.base: swayscope "
                       "compares one base model with and without the adapter; nearest "
                       "equivalent: the same base in both blocks")
        out["base"] = _local_path(ft["base"])
        out["adapter"] = _local_path(ft["adapter"])
        self.origins[("models", "base")] = ("models", "ft", "base")
        self.origins[("models", "adapter")] = ("models", "ft", "adapter")
        if "dtype" in ft:
            dtype = ft["dtype"]
            out["dtype"] = DTYPES.get(dtype, dtype) if isinstance(dtype, str) else dtype
            self.origins[("models", "dtype")] = ("models", "ft", "dtype")
        if "device" in ft:
            out["device"] = ft["device"]
            self.origins[("models", "device")] = ("models", "ft", "device")
        return out

    def defaults(self, data: Mapping[str, Any]) -> dict[str, Any]:
        given = data.get("defaults", {})
        out: dict[str, Any] = {}
        if not isinstance(given, Mapping):
            self.error(("defaults",), f"must be a mapping; got {shown(given)}")
            return out
        for key in given:
            if key not in DEFAULT_RULES:
                self.unknown(("defaults", key), list(DEFAULT_RULES), "dlm-sway's defaults")
        origins: dict[str, KeyPath] = {}
        self.apply(DEFAULT_RULES, given, ("defaults",), out, origins, {})
        self.origins.update({("defaults", k): v for k, v in origins.items()})
        return out

    def probe(
        self, entry: Any, i: int, index: int, suite_top_k: Any
    ) -> dict[str, Any] | SkippedEntry | None:
        """Entry ``i`` of dlm-sway's suite as swayscope's ``suite[index]``; a
        :class:`SkippedEntry` when it is not run (its kind unsupported, or turned off), None
        when it cannot be read (an error was recorded)."""
        path: KeyPath = ("suite", i)
        if not isinstance(entry, Mapping):
            self.error(path, f"a probe entry must be a mapping with name and kind; got "
                       f"{type(entry).__name__}")
            return None
        kind = entry.get("kind")
        if not isinstance(kind, str) or kind not in SWAY_KINDS:
            what, hint = f"needs a kind; got {shown(kind)}", ""
            if isinstance(kind, str):
                what = f"{kind!r} is not a probe kind of dlm-sway {DLM_SWAY_VERSION}"
                close = difflib.get_close_matches(kind, SWAY_KINDS, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
            self.error((*path, "kind"), f"{what} (its kinds: {', '.join(SWAY_KINDS)}){hint}")
            return None
        enabled = entry.get("enabled", True)
        name = entry.get("name")
        label = name if isinstance(name, str) and name else kind
        if not isinstance(enabled, bool):
            self.error((*path, "enabled"), f"must be true or false; got {shown(enabled)}")
            return None
        if not enabled:
            return SkippedEntry(
                index, path, self.where(path), label, kind,
                "enabled: false in the suite (dlm-sway skips it too)",
                unsupported=False, entry=entry,
            )
        rules = kind_rules(kind)
        if rules is None:
            return SkippedEntry(
                index, path, self.where((*path, "kind")), label, kind,
                f"swayscope has no probe for dlm-sway's kind {kind!r} yet; nearest: "
                f"{NEAREST_KIND[kind]}",
                unsupported=True, entry=entry,
            )
        known = [*COMMON_FIELDS, *rules.fields]
        for key in entry:
            if key not in known:
                self.unknown((*path, key), known, f"dlm-sway's {kind}")
        if "weight" in entry:
            self.note((*path, "weight"), f"ignored: {WEIGHT.why}")
        if rules.note:
            self.note((*path, "kind"), rules.note)
        if kind in KINDS and "prompts" in rules.fields and not entry.get("prompts"):
            self.error((*path, "prompts"), "missing or empty: dlm-sway reports this probe as "
                       "an error; list the prompts")
        top_k = entry.get(TOP_K)
        if top_k is not None and top_k != suite_top_k:
            self.error((*path, TOP_K), f"{shown(top_k)} is not supported: swayscope uses one "
                       f"top-k for the whole suite ({suite_top_k}); nearest equivalent: "
                       "defaults.top_k")
        out: dict[str, Any] = {"kind": rules.to}
        if entry.get("name") is not None:
            out["name"] = entry["name"]
        spec_class = PROBE_KINDS[rules.to].spec_class
        native_defaults = {k: f.default for k, f in spec_class.model_fields.items()}
        fields = {k: r for k, r in rules.fields.items() if k != TOP_K}
        origins: dict[str, KeyPath] = {}
        self.apply(fields, entry, path, out, origins, native_defaults)
        self.origins[("suite", index)] = path
        self.origins.update({("suite", index, k): v for k, v in origins.items()})
        return out


def translate(data: Mapping[str, Any], root: yaml.Node | None, source: str) -> Translation:
    """A dlm-sway suite as a swayscope suite mapping, or SpecError listing every problem."""
    t = _Translator(root, source)
    for key in data:
        if key not in TOP_LEVEL:
            t.unknown((key,), TOP_LEVEL, "a dlm-sway suite")
    version = data.get("version", SWAY_SPEC_VERSION)
    if version != SWAY_SPEC_VERSION:
        t.error(("version",), f"dlm-sway spec version {shown(version)} is not supported; "
                f"swayscope reads version {SWAY_SPEC_VERSION} (dlm-sway {DLM_SWAY_VERSION})")
    defaults = t.defaults(data)
    out: dict[str, Any] = {
        "version": 1,
        "name": Path(source).stem if source.endswith((".yaml", ".yml")) else FORMAT_NAME,
        "models": t.models(data),
    }
    if defaults:
        out["defaults"] = defaults
    if data.get("dlm_source") is not None:
        out["dlm_source"] = _local_path(data["dlm_source"])
        t.origins[("dlm_source",)] = ("dlm_source",)
        t.note(("dlm_source",), "read by swayscope itself: a .dlm document by its section "
               "grammar (no dlm package needed), any other file as markdown")
    suite = data.get("suite", [])
    if not isinstance(suite, list):
        t.error(("suite",), f"must be a list of probes; got {type(suite).__name__}")
        suite = []
    top_k = defaults.get("top_k", 256)
    probes: list[dict[str, Any]] = []
    skipped: list[SkippedEntry] = []
    for i, entry in enumerate(suite):
        probe = t.probe(entry, i, len(probes), top_k)
        if isinstance(probe, SkippedEntry):
            skipped.append(probe)
        elif probe is not None:
            probes.append(probe)
    if skipped and not probes and not t.errors:
        t.error(("suite",), "none of its entries can run in swayscope: "
                + "; ".join(f"{s.name} ({s.kind}): {s.reason}" for s in skipped))
    out["suite"] = probes
    if t.errors:
        raise SpecError(
            f"{source} is a dlm-sway suite that swayscope cannot run as is:\n  "
            + "\n  ".join(t.errors)
        )
    return Translation(data=out, origin=t.origin, format=FORMAT_NAME, notes=tuple(t.notes),
                       skipped=tuple(skipped))


class DlmSwayFormat:
    """dlm-sway's ``sway.yaml`` as a :class:`~swayscope.suite.spec.SuiteFormat`."""

    name = FORMAT_NAME

    def detect(self, data: Mapping[str, Any]) -> bool:
        return is_dlm_sway_suite(data)

    def translate(
        self, data: Mapping[str, Any], root: yaml.Node | None, source: str
    ) -> Translation:
        return translate(data, root, source)


DLM_SWAY = DlmSwayFormat()


def check_local_models(loaded: LoadedSuite) -> None:
    """Fail before anything loads when a model is not a local folder: dlm-sway downloads
    Hub ids, swayscope reads local folders only."""
    models = loaded.spec.models
    for key, path in (("base", models.base), ("adapter", models.adapter)):
        if path is None or path.is_dir():
            continue
        hint = (
            "swayscope loads local folders only (no downloads): fetch it once, e.g. "
            "`huggingface-cli download ORG/NAME --local-dir DIR`, and give DIR"
            if key == "base"
            else "give the PEFT adapter's folder"
        )
        raise SpecError(
            f"{loaded.where('models', key)}: models.ft.{key}: {str(path)!r} is not a folder "
            "(relative paths in a dlm-sway suite are resolved against the current directory, "
            f"as dlm-sway does); {hint}"
        )


def refuse_unsupported(loaded: LoadedSuite) -> None:
    """``--strict``: SpecError when the suite has entries swayscope cannot run (entries the
    file turns off are not refused: dlm-sway skips them too)."""
    if loaded.translation is None:
        return
    refused = [entry for entry in loaded.translation.skipped if entry.unsupported]
    if refused:
        raise SpecError(
            f"{loaded.source} has {len(refused)} entr{'y' if len(refused) == 1 else 'ies'} "
            "swayscope cannot run, and --strict refuses such entries (without --strict they "
            "are skipped and reported as skip):\n  " + "\n  ".join(
                f"{e.where}: {'.'.join(map(str, e.path))}.kind: {e.reason}"
                for e in refused
            )
        )


def _entry_yaml(entry: Mapping[str, Any]) -> str:
    return yaml.safe_dump([dict(entry)], sort_keys=False, allow_unicode=True, width=100)


def _commented_out(entry: SkippedEntry) -> list[str]:
    """A skipped entry as YAML comments: why, then the entry as written."""
    why = textwrap.wrap(entry.reason, width=96, initial_indent="#   ",
                        subsequent_indent="#   ", break_long_words=False)
    return [f"# Not converted ({entry.where}):", *why,
            *(f"# {line}" for line in _entry_yaml(entry.entry).splitlines())]


def render_spec(loaded: LoadedSuite, *, relative_to: Path | None = None) -> str:
    """The translated suite as swayscope spec YAML: the notes as comments at the top, and
    each entry that is not run kept, commented out, in its place, saying why.

    Model and document paths are absolute, or relative to ``relative_to`` (where the file
    will live).
    """
    translation = loaded.translation
    if translation is None:
        raise SpecError(f"{loaded.source} is already a swayscope suite spec; nothing to convert")
    data = dict(translation.data)
    models = dict(data["models"])
    if relative_to is not None:
        for key in ("base", "adapter"):
            models[key] = os.path.relpath(models[key], relative_to.resolve())
        if "dlm_source" in data:
            data["dlm_source"] = os.path.relpath(data["dlm_source"], relative_to.resolve())
    data["models"] = models
    probes = data.pop("suite")
    header = [
        f"# swayscope suite spec, converted from the dlm-sway {DLM_SWAY_VERSION} suite "
        f"{loaded.source} by `swayscope convert`.",
        "# Model and document paths are " + ("relative to this file's folder."
                                             if relative_to is not None else "absolute."),
    ]
    if translation.notes:
        header.append("# What differs from dlm-sway (file:line of the dlm-sway suite):")
        header.extend(f"#   {note}" for note in translation.notes)
    body = yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100).splitlines()
    body.append("suite:")
    skipped = list(translation.skipped)
    for index, probe in enumerate([*probes, None]):
        while skipped and skipped[0].position == index:
            body.extend(_commented_out(skipped.pop(0)))
        if probe is not None:
            body.extend(_entry_yaml(probe).splitlines())
    return "\n".join(header + body) + "\n"


__all__ = [
    "COLLAPSE_LENGTHS_FIELD",
    "DLM_SWAY",
    "DLM_SWAY_VERSION",
    "FORMAT_NAME",
    "STRICT_HINT",
    "DlmSwayFormat",
    "check_local_models",
    "is_dlm_sway_suite",
    "kind_rules",
    "refuse_unsupported",
    "render_spec",
    "translate",
]
