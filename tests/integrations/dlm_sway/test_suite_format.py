"""dlm-sway's sway.yaml read as a swayscope suite: the mapping, the notes, the errors, convert."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from dlm_sway_testing import SWAY_SUITE, SWAYSCOPE_KINDS, write_sway_suite
from sway_testing import run_probes

from swayscope.backends.dummy import DummyBackend
from swayscope.errors import SpecError
from swayscope.instrumentation import BackendInstrumentation
from swayscope.integrations.dlm_sway.suite_format import (
    DLM_SWAY,
    check_local_models,
    is_dlm_sway_suite,
    refuse_unsupported,
    render_spec,
)
from swayscope.probes.delta_kl import DeltaKLProbe, DeltaKLSpec
from swayscope.probes.registry import PROBE_KINDS
from swayscope.suite.report import render_markdown
from swayscope.suite.runner import run_suite
from swayscope.suite.spec import LoadedSuite, load_suite, load_suite_text

KEEPER = Path(__file__).parents[2] / "probes" / "data" / "keeper.md"
HEAD = """\
version: 1
models:
  base: {{kind: hf, base: /m/base}}
  ft: {{kind: hf, base: /m/base, adapter: /m/lora}}
{defaults}suite:
"""


def sway(entries: str, defaults: str = "", source: str = "sway.yaml") -> LoadedSuite:
    """Load a dlm-sway suite given its ``suite:`` entries (YAML, indented by two)."""
    return load_suite_text(HEAD.format(defaults=defaults) + entries, source, formats=[DLM_SWAY])


def line_of(text: str, fragment: str) -> int:
    """1-based line of the first line of ``text`` containing ``fragment``."""
    return next(i for i, ln in enumerate(text.splitlines(), 1) if fragment in ln)


def test_the_format_is_recognised_by_its_model_blocks() -> None:
    assert is_dlm_sway_suite(yaml.safe_load(SWAY_SUITE.format(base="/b", adapter="/a")))
    assert not is_dlm_sway_suite({"models": {"kind": "hf", "base": "/b", "adapter": "/a"}})
    assert not is_dlm_sway_suite({"models": {"kind": "dummy"}, "suite": []})
    native = load_suite_text(
        "version: 1\nmodels: {kind: dummy}\nsuite:\n  - kind: delta_kl\n", "s.yaml",
        formats=[DLM_SWAY],
    )
    assert native.translation is None


def test_every_mapped_kind_and_field(tmp_path: Path) -> None:
    loaded = load_suite(write_sway_suite(tmp_path, Path("/m/base"), Path("/m/lora")),
                        formats=[DLM_SWAY])
    assert loaded.translation is not None and loaded.translation.format == "dlm-sway"
    assert {p.spec.label: p.kind for p in loaded.probes} == SWAYSCOPE_KINDS
    spec = loaded.spec
    assert spec.name == "sway"
    assert (spec.models.kind, spec.models.dtype, spec.models.device) == ("hf", "float32", "cpu")
    assert (spec.models.base, spec.models.adapter) == (Path("/m/base"), Path("/m/lora"))
    assert (spec.defaults.seed, spec.defaults.top_k) == (0, 64)
    by = {p.spec.label: p.spec for p in loaded.probes}
    null = by["calibration"]
    assert (null.n, null.seed) == (3, 1000)  # type: ignore[attr-defined]
    dk = by["dk_prose"]
    assert (dk.threshold, dk.min_z, len(dk.prompts)) == (0.02, 3.0, 4)  # type: ignore[attr-defined]
    assert by["ablation"].lambdas == (0.0, 0.25, 0.5, 0.75, 1.0, 1.25)  # type: ignore[attr-defined]
    collapse = by["collapse"]
    assert collapse.context_tokens == (0, 16, 64)  # type: ignore[attr-defined]
    assert collapse.min_half_life == 512  # type: ignore[attr-defined]
    assert by["prose_ppl"].max_chunks == 4  # type: ignore[attr-defined]


def test_the_eight_document_and_generation_kinds_map_field_by_field() -> None:
    case = "{prompt: The keeper lights the, gold: ' lamp', paraphrases: ['What is lit?']}"
    text = HEAD.format(defaults="") + (
        "  - {name: calib, kind: calibration_drift, items_limit: 20, regression_nats: 2.0,\n"
        "     assert_fraction_regressed_lt: 0.1, assert_mean_delta_gte: -1.0}\n"
        "  - {name: sis, kind: section_internalization, include_kinds: [prose],\n"
        "     per_section_threshold: 0.1, assert_passing_section_frac: 0.4,\n"
        "     max_prose_chars: 500, assert_z_gte: 2.0}\n"
        "  - {name: leak, kind: leakage, prefix_chars: 64, continuation_chars: 128,\n"
        "     max_new_tokens: 32, perturbations: [typo], assert_recall_lt: 0.3,\n"
        "     min_fragility: 0.2, assert_z_gte: 1.0}\n"
        f"  - {{name: para, kind: paraphrase_invariance, cases: [{case}], intent: memorize,\n"
        "     min_verbatim_lift: 0.1}\n"
        "  - {name: pref, kind: preference_flip, assert_flip_rate_gte: 0.6,\n"
        "     triples: [{prompt: p, chosen: ' yes', rejected: ' no'}]}\n"
        "  - {name: style, kind: style_fingerprint, prompts: [Tell me], doc_reference: Verse.,\n"
        "     max_new_tokens: 16, assert_shift_gte: 0.1, extended: auto}\n"
        f"  - {{name: revert, kind: adapter_revert, cases: [{case}], max_new_tokens: 8,\n"
        "     embedding_model: sentence-transformers/all-MiniLM-L6-v2}\n"
        "  - {name: topics, kind: cluster_kl, prompts: [a, b, c, d], num_clusters: 2,\n"
        "     min_prompts: 4, assert_specificity_gte: 0.7, divergence: kl}\n"
        f"dlm_source: {KEEPER}\n"
    )
    loaded = load_suite_text(text, "sway.yaml", formats=[DLM_SWAY])
    by = {p.spec.label: p.spec.model_dump() for p in loaded.probes}
    assert [p.kind for p in loaded.probes] == [
        "calibration_drift", "section_internalization", "leakage", "paraphrase_invariance",
        "preference_flip", "style_fingerprint", "adapter_revert", "cluster_kl",
    ]
    assert by["calib"]["items_limit"] == 20 and by["calib"]["min_z"] is None
    assert (by["sis"]["include_kinds"], by["sis"]["min_z"]) == (("prose",), 2.0)
    assert (by["leak"]["perturbations"], by["leak"]["min_z"]) == (("typo",), 1.0)
    assert by["para"]["intent"] == "memorize" and by["para"]["min_z"] == 3.0
    assert by["pref"]["triples"][0]["chosen"] == " yes"
    assert by["style"]["doc_reference"] == "Verse."
    assert by["revert"]["cases"][0]["paraphrases"] == ("What is lit?",)
    assert (by["topics"]["num_clusters"], by["topics"]["divergence"]) == (2, "kl")
    assert loaded.spec.dlm_source == KEEPER
    assert loaded.document is not None and len(loaded.document.sections) == 5
    assert loaded.translation is not None
    notes = "\n".join(loaded.translation.notes)
    assert f"sway.yaml:{line_of(text, 'embedding_model')}: suite.6.embedding_model: ignored" in (
        notes
    )
    assert "suite.5.extended: ignored" in notes


def test_dlm_sway_defaults_are_kept_where_swayscope_has_the_field() -> None:
    loaded = sway("  - {name: dk, kind: delta_kl, prompts: [a b]}\n"
                  "  - {name: pc, kind: prompt_collapse, prompts: [a b]}\n")
    dk, pc = (p.spec for p in loaded.probes)
    assert dk.threshold == 0.02  # type: ignore[attr-defined]  # dlm-sway's assert_mean_gte
    assert pc.context_tokens == (0, 256, 512, 1024)  # type: ignore[attr-defined]
    assert pc.min_half_life == 512  # type: ignore[attr-defined]


def test_one_kind_under_two_names_runs_twice_each_calibrated() -> None:
    loaded = sway(
        "  - {name: calib, kind: null_adapter, runs: 2}\n"
        "  - {name: prose, kind: delta_kl, prompts: [The cat sat, A dog ran]}\n"
        "  - {name: code, kind: delta_kl, prompts: ['x = 1', 'def f():']}\n"
    )
    assert [(p.kind, p.spec.label) for p in loaded.probes] == [
        ("null_adapter", "calib"), ("delta_kl", "prose"), ("delta_kl", "code"),
    ]
    backend = DummyBackend(inst=BackendInstrumentation(), seed=0)
    results, ctx = run_probes(backend, loaded.probes)
    assert set(ctx.calibration) == {"prose", "code"}
    assert [r.name for r in results] == ["calib", "prose", "code"]
    assert results[1].score != results[2].score


def test_relative_model_paths_resolve_against_the_current_directory_as_in_dlm_sway(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec_dir, cwd = tmp_path / "specs", tmp_path / "work"
    spec_dir.mkdir()
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    path = write_sway_suite(spec_dir, Path("models/base"), Path("~/lora"))
    loaded = load_suite(path, formats=[DLM_SWAY])
    assert loaded.spec.models.base == cwd / "models" / "base"
    assert loaded.spec.models.adapter == Path.home() / "lora"


def test_ignored_and_approximated_fields_come_back_as_notes_with_their_lines() -> None:
    entries = (
        "  - name: calib\n    kind: null_adapter\n    init_scale: 0.02\n    cache: true\n"
        "  - name: dk\n    kind: delta_kl\n    prompts: [a b]\n    weight: 2.0\n"
        "  - name: unused\n    kind: delta_kl\n    prompts: [a b]\n    enabled: false\n"
        "  - name: ppl\n    kind: external_perplexity\n"
    )
    text = HEAD.format(defaults="defaults:\n  coverage_threshold: 0.7\n") + entries
    loaded = load_suite_text(
        text + f"dlm_source: {KEEPER}\n", "sway.yaml", formats=[DLM_SWAY]
    )
    assert [p.spec.label for p in loaded.probes] == ["calib", "dk", "unused", "ppl"]
    assert loaded.translation is not None
    notes = "\n".join(loaded.translation.notes)
    for key, fragment in (
        ("init_scale", "suite.0.init_scale: accepted at dlm-sway's default"),
        ("cache", "suite.0.cache: ignored"),
        ("weight", "suite.1.weight: ignored: it weights dlm-sway's composite score"),
        ("kind: external_perplexity", "suite.3.kind: runs as perplexity_shift"),
        ("coverage_threshold", "defaults.coverage_threshold: ignored"),
        ("dlm_source", "dlm_source: read by swayscope itself"),
    ):
        assert f"sway.yaml:{line_of(text + 'dlm_source: x', key)}: {fragment}" in notes, notes


@pytest.mark.parametrize(
    ("entries", "defaults", "line_key", "fragments"),
    [
        (
            "  - {name: dk, kind: delta_kl, prompts: [a b]}\n  - name: leak\n    kind: leakge\n",
            "", "kind: leakge",
            ["suite.1.kind", "'leakge' is not a probe kind of dlm-sway 0.1.0",
             "its kinds: null_adapter, delta_kl, adapter_ablation, prompt_collapse, "
             "external_perplexity, calibration_drift, section_internalization, leakage, "
             "paraphrase_invariance, preference_flip, style_fingerprint, adapter_revert, "
             "cluster_kl", "did you mean 'leakage'?"],
        ),
        (
            "  - name: topics\n    kind: cluster_kl\n", "", "name: topics",
            ["suite.0.prompts", "missing or empty"],
        ),
        (
            "  - {name: dk, kind: delta_kl, prompts: [a b]}\n  - name: dk\n"
            "    kind: leakage\n", "", "  - name: dk",
            ["suite.1", "'dk' is already used by suite.0"],
        ),
        (
            "  - name: abl\n    kind: adapter_ablation\n    prompts: [a b]\n"
            "    assert_linearity_gte: 0.9\n", "", "assert_linearity_gte",
            ["suite.0.assert_linearity_gte", "0.9 is not supported", "R²",
             "at dlm-sway's default (0.85)", "nearest equivalent: threshold, monotone_tolerance"],
        ),
        (
            "  - name: calib\n    kind: null_adapter\n    init_scale: 0.05\n", "", "init_scale",
            ["suite.0.init_scale", "0.05 is not supported", "absolute std",
             "nearest equivalent: init_scale in a swayscope spec"],
        ),
        (
            "  - name: calib\n    kind: null_adapter\n    rank_multipliers: [0.5, 1.0]\n", "",
            "rank_multipliers", ["suite.0.rank_multipliers", "nearest equivalent: rank_scale"],
        ),
        (
            "  - name: dk\n    kind: delta_kl\n    prompts: [a b]\n    top_k: 32\n",
            "defaults:\n  top_k: 64\n", "top_k: 32",
            ["suite.0.top_k", "32 is not supported", "one top-k for the whole suite (64)",
             "nearest equivalent: defaults.top_k"],
        ),
        (
            "  - name: dk\n    kind: delta_kl\n    prompts: [a b]\n    assert_mean_gt: 0.1\n",
            "", "assert_mean_gt", ["suite.0.assert_mean_gt", "did you mean 'assert_mean_gte'"],
        ),
        (
            "  - name: dk\n    kind: delta_kl\n", "", "name: dk",
            ["suite.0.prompts", "missing or empty", "list the prompts"],
        ),
        (
            "  - name: pc\n    kind: prompt_collapse\n    prompts: [a b]\n"
            "    legacy_stuffing: true\n", "", "legacy_stuffing",
            ["suite.0.legacy_stuffing", "nearest equivalent: context_text"],
        ),
        (
            "  - name: ppl\n    kind: external_perplexity\n    assert_mean_delta_gte: -0.5\n",
            "", "assert_mean_delta_gte",
            ["suite.0.assert_mean_delta_gte", "-0.5 is not supported",
             "nearest equivalent: threshold"],
        ),
        (
            "  - {name: dk, kind: delta_kl, prompts: [a b]}\n",
            "defaults:\n  differential: false\n", "differential",
            ["defaults.differential", "nearest equivalent: differential: true"],
        ),
        (
            "  - name: calib\n    kind: null_adapter\n    runs: 1\n", "", "runs: 1",
            ["suite.0.runs", "greater than or equal to 2"],
        ),
        (
            "  - name: pc\n    kind: prompt_collapse\n    prompts: [a b]\n"
            "    context_lengths: [64, 128]\n", "", "context_lengths",
            ["suite.0.context_lengths", "the first context length must be 0"],
        ),
        (
            "  - {name: dk, kind: delta_kl, prompts: [a b]}\n  - name: calib\n"
            "    kind: null_adapter\n", "", "name: calib",
            ["suite.1", "must be the first probe", "move it to the top"],
        ),
        (
            "  - {name: dk, kind: delta_kl, prompts: [a b]}\n  - {name: dk, kind: delta_kl, "
            "prompts: [c d]}\n", "", "prompts: [c d]",
            ["suite.1", "'dk' is already used by suite.0"],
        ),
    ],
)
def test_what_cannot_run_as_is_stops_naming_line_field_support_and_nearest(
    entries: str, defaults: str, line_key: str, fragments: list[str]
) -> None:
    text = HEAD.format(defaults=defaults) + entries
    with pytest.raises(SpecError) as info:
        load_suite_text(text, "sway.yaml", formats=[DLM_SWAY])
    msg = str(info.value)
    assert f"sway.yaml:{line_of(text, line_key)}: " in msg, msg
    for fragment in fragments:
        assert fragment in msg, (fragment, msg)


@pytest.mark.parametrize(
    ("models", "fragments"),
    [
        ("  base: {kind: hf, base: /m/b}\n  ft: {kind: mlx, base: /m/b, adapter: /m/a}\n",
         ["sway.yaml:4: models.ft.kind", "'mlx' is not supported",
          "nearest equivalent: kind: hf"]),
        ("  base: {kind: hf, base: /m/b}\n"
         "  ft: {kind: hf, base: /m/b, adapter: /m/a, trust_remote_code: true}\n",
         ["sway.yaml:4: models.ft.trust_remote_code", "nearest equivalent: none"]),
        ("  base: {kind: hf, base: /m/other}\n  ft: {kind: hf, base: /m/b, adapter: /m/a}\n",
         ["sway.yaml:4: models.ft.base", "differs from models.base.base"]),
        ("  base: {kind: hf, base: /m/b}\n  ft: {kind: hf, base: /m/b}\n",
         ["sway.yaml:4: models.ft.adapter", "missing"]),
    ],
)
def test_models_swayscope_cannot_load_stop_with_the_line(
    models: str, fragments: list[str]
) -> None:
    text = f"version: 1\nmodels:\n{models}suite:\n  - {{name: dk, kind: delta_kl, prompts: [a]}}\n"
    with pytest.raises(SpecError) as info:
        load_suite_text(text, "sway.yaml", formats=[DLM_SWAY])
    for fragment in fragments:
        assert fragment in str(info.value), (fragment, str(info.value))


def test_every_problem_is_reported_at_once() -> None:
    text = HEAD.format(defaults="") + (
        "  - {name: a, kind: leakag}\n  - {name: b, kind: delta_kl, prompt: [x]}\n"
    )
    with pytest.raises(SpecError) as info:
        load_suite_text(text, "sway.yaml", formats=[DLM_SWAY])
    assert "sway.yaml:6: suite.0.kind" in str(info.value)
    assert "sway.yaml:7: suite.1.prompt" in str(info.value)


def test_an_adapter_on_the_base_block_is_ignored_as_dlm_sway_ignores_it() -> None:
    text = (
        "version: 1\nmodels:\n  base: {kind: hf, base: /m/b, adapter: /m/a}\n"
        "  ft: {kind: hf, base: /m/b, adapter: /m/a}\nsuite:\n"
        "  - {name: dk, kind: delta_kl, prompts: [a]}\n"
    )
    loaded = load_suite_text(text, "sway.yaml", formats=[DLM_SWAY])
    assert loaded.spec.models.adapter == Path("/m/a")
    assert loaded.translation is not None
    assert any(n.startswith("sway.yaml:3: models.base.adapter: ignored") for n in
               loaded.translation.notes), loaded.translation.notes


def test_a_hub_id_is_not_a_local_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    path = write_sway_suite(tmp_path, Path("HuggingFaceTB/SmolLM2-135M"), tmp_path)
    with pytest.raises(SpecError) as info:
        check_local_models(load_suite(path, formats=[DLM_SWAY]))
    msg = str(info.value)
    assert f"{path}:10: models.ft.base" in msg and "SmolLM2-135M" in msg
    assert "local folders only" in msg and "huggingface-cli download" in msg


@pytest.mark.parametrize("next_to_it", [False, True])
def test_convert_round_trips(tmp_path: Path, next_to_it: bool) -> None:
    base, adapter = tmp_path / "models" / "base", tmp_path / "models" / "lora"
    document = tmp_path / "docs" / "keeper.md"
    document.parent.mkdir()
    document.write_text(KEEPER.read_text())
    sway_file = write_sway_suite(tmp_path, base, adapter)
    sway_file.write_text(sway_file.read_text() + f"dlm_source: {document}\n")
    original = load_suite(sway_file, formats=[DLM_SWAY])
    out = tmp_path / "converted" / "suite.yaml"
    out.parent.mkdir()
    out.write_text(render_spec(original, relative_to=out.parent if next_to_it else None))
    converted = load_suite(out)
    assert converted.translation is None
    text = out.read_text()
    assert ("base: ../models/base" in text) is next_to_it
    assert "# What differs from dlm-sway" in text and "runs as perplexity_shift" in text
    models = converted.spec.models
    assert (models.base.resolve(), models.adapter.resolve()) == (base, adapter)  # type: ignore[union-attr]
    assert ("dlm_source: ../docs/keeper.md" in text) is next_to_it
    assert converted.spec.dlm_source is not None
    assert converted.spec.dlm_source.resolve() == document
    assert converted.document is not None and original.document is not None
    assert converted.document.sections == original.document.sections
    plain = converted.spec.model_copy(
        update={"models": original.spec.models, "dlm_source": original.spec.dlm_source}
    )
    assert plain == original.spec
    assert [p.spec for p in converted.probes] == [p.spec for p in original.probes]


def test_convert_refuses_a_swayscope_spec() -> None:
    native = load_suite_text("version: 1\nmodels: {kind: dummy}\nsuite:\n  - kind: delta_kl\n",
                             "s.yaml", formats=[DLM_SWAY])
    with pytest.raises(SpecError, match="already a swayscope suite spec"):
        render_spec(native)


MIXED = (
    "  - {name: calib, kind: null_adapter, runs: 2}\n"
    "  - {name: cal, kind: calibration_drift, items_limit: 50}\n"
    "  - {name: dk, kind: delta_kl, prompts: [The cat sat, A dog ran]}\n"
    "  - {name: leaks, kind: leakage}\n"
    "  - {name: sec, kind: section_internalization}\n"
    "  - {name: later, kind: delta_kl, prompts: [x y], enabled: false}\n"
)


#: What the nearest swayscope probe is said to be for each kind :func:`lacking` takes away.
NEAREST = {
    "calibration_drift": "perplexity_shift (how much the adapter moved the likelihood of "
    "general text)",
    "leakage": "none (swayscope does not generate text)",
    "section_internalization": "perplexity_shift on each section's text",
}


@pytest.fixture
def lacking() -> Iterator[None]:
    """A swayscope without three of dlm-sway's kinds: every kind of dlm-sway 0.1.0 has a
    probe now, but the path for a kind without one (a later dlm-sway's) must still hold.
    The registries are put back whole, in their order (tests read it)."""
    from swayscope.integrations.dlm_sway import field_rules

    saved = [(d, dict(d)) for d in (field_rules.KINDS, PROBE_KINDS, field_rules.NEAREST_KIND)]
    for kind, nearest in NEAREST.items():
        del field_rules.KINDS[kind], PROBE_KINDS[kind]
        field_rules.NEAREST_KIND[kind] = nearest
    try:
        yield
    finally:
        for registry, before in saved:
            registry.clear()
            registry.update(before)


@pytest.mark.usefixtures("lacking")
def test_kinds_swayscope_lacks_are_skipped_in_place_with_the_reason() -> None:
    loaded = sway(MIXED)
    assert [(p.spec.label, p.kind) for p in loaded.probes] == [
        ("calib", "null_adapter"), ("cal", "calibration_drift"), ("dk", "delta_kl"),
        ("leaks", "leakage"), ("sec", "section_internalization"), ("later", "delta_kl"),
    ]
    assert loaded.translation is not None
    skipped = {e.name: e for e in loaded.translation.skipped}
    assert {n: e.unsupported for n, e in skipped.items()} == {
        "cal": True, "leaks": True, "sec": True, "later": False,
    }
    text = HEAD.format(defaults="") + MIXED
    assert skipped["leaks"].where == f"sway.yaml:{line_of(text, 'kind: leakage')}"
    results, ctx = run_probes(DummyBackend(inst=BackendInstrumentation(), seed=0), loaded.probes)
    verdicts = {r.name: (r.verdict, r.kind, r.message) for r in results}
    assert verdicts["cal"] == (
        "skip", "calibration_drift",
        "swayscope has no probe for dlm-sway's kind 'calibration_drift' yet; nearest: "
        "perplexity_shift (how much the adapter moved the likelihood of general text)",
    )
    assert verdicts["leaks"][:2] == ("skip", "leakage") and "nearest: none" in verdicts["leaks"][2]
    assert verdicts["later"] == ("skip", "delta_kl",
                                 "enabled: false in the suite (dlm-sway skips it too)")
    assert verdicts["dk"][0] == "pass" and set(ctx.calibration) == {"dk"}


@pytest.mark.usefixtures("lacking")
def test_strict_refuses_what_would_be_skipped_but_not_what_the_file_turns_off() -> None:
    text = HEAD.format(defaults="") + MIXED
    with pytest.raises(SpecError) as info:
        refuse_unsupported(sway(MIXED))
    msg = str(info.value)
    assert "has 3 entries swayscope cannot run, and --strict refuses such entries" in msg
    for kind in ("calibration_drift", "leakage", "section_internalization"):
        assert f"sway.yaml:{line_of(text, 'kind: ' + kind)}: " in msg and f"'{kind}'" in msg
    assert "later" not in msg
    refuse_unsupported(sway("  - {name: dk, kind: delta_kl, prompts: [a], enabled: false}\n"
                            "  - {name: dk2, kind: delta_kl, prompts: [a]}\n"))


def test_a_kind_that_swayscope_gains_runs_under_its_name_with_its_fields(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    class ClusterSpec(DeltaKLSpec):
        kind: str = "cluster_kl"  # type: ignore[assignment]

    class ClusterProbe(DeltaKLProbe):
        kind = "cluster_kl"
        spec_class = ClusterSpec

    from swayscope.integrations.dlm_sway import field_rules, suite_format

    # As if swayscope had just gained cluster_kl, with no field rules of its own yet.
    rules = {k: v for k, v in field_rules.KINDS.items() if k != "cluster_kl"}
    monkeypatch.setattr(suite_format, "KINDS", rules)
    monkeypatch.setitem(PROBE_KINDS, "cluster_kl", ClusterProbe)
    loaded = sway("  - {name: topics, kind: cluster_kl, prompts: [a b, c d], threshold: 0.5,"
                  " weight: 2}\n")
    assert loaded.translation is not None and not loaded.translation.skipped
    (probe,) = loaded.probes
    assert (type(probe), probe.spec.threshold) == (ClusterProbe, 0.5)  # type: ignore[attr-defined]
    with pytest.raises(SpecError, match=r"sway.yaml:6: suite.0.treshold: .*did you mean"):
        sway("  - {name: topics, kind: cluster_kl, prompts: [a], treshold: 0.5}\n")


def test_the_base_blocks_adapter_is_ignored_as_dlm_sway_does_with_a_note() -> None:
    text = ("version: 1\nmodels:\n  base: {kind: hf, base: /m/b, adapter: /m/other}\n"
            "  ft: {kind: hf, base: /m/b, adapter: /m/a}\nsuite:\n"
            "  - {name: dk, kind: delta_kl, prompts: [a]}\n")
    loaded = load_suite_text(text, "sway.yaml", formats=[DLM_SWAY])
    assert loaded.spec.models.adapter == Path("/m/a")
    assert loaded.translation is not None
    (note,) = loaded.translation.notes
    assert note.startswith("sway.yaml:3: models.base.adapter: ignored, as dlm-sway ignores it "
                           "in differential mode")


def test_the_notes_are_in_the_run_report() -> None:
    loaded = sway("  - {name: dk, kind: delta_kl, prompts: [a b], weight: 2}\n")
    loaded.spec = loaded.spec.model_copy(update={"models": loaded.spec.models.model_copy(
        update={"kind": "dummy"})})
    result = run_suite(loaded, DummyBackend(inst=BackendInstrumentation(), seed=0),
                       live_progress=False)
    assert result.notes == list(loaded.translation.notes)  # type: ignore[union-attr]
    assert result.to_dict()["notes"] == result.notes and "weight: ignored" in result.notes[0]
    assert f"- note: {result.notes[0]}" in render_markdown(result)


@pytest.mark.usefixtures("lacking")
def test_convert_keeps_each_skipped_entry_in_its_place_as_a_comment_saying_why(
    tmp_path: Path
) -> None:
    text = render_spec(sway(MIXED))
    lines = text.splitlines()
    start = lines.index("suite:")
    comments = [ln for ln in lines[start:] if ln.startswith("#")]
    line = line_of(HEAD.format(defaults="") + MIXED, "calibration_drift")
    assert comments[:2] == [f"# Not converted (sway.yaml:{line}):",
                            "#   swayscope has no probe for dlm-sway's kind 'calibration_drift' "
                            "yet; nearest:"]
    said = " ".join(c.lstrip("# ") for c in comments)
    assert "'calibration_drift' yet; nearest: perplexity_shift" in said
    assert "# - name: cal\n#   kind: calibration_drift\n#   items_limit: 50\n- kind: delta_kl" \
        in text
    assert "# - name: later\n#   kind: delta_kl\n#   prompts:\n#   - x y\n#   enabled: false" \
        in text
    out = tmp_path / "suite.yaml"
    out.write_text(text)
    converted = load_suite(out)
    assert [(p.spec.label, p.kind) for p in converted.probes] == [
        ("calib", "null_adapter"), ("dk", "delta_kl"),
    ]
