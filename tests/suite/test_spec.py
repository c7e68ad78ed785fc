"""Suite spec: YAML → validated models, errors that name file, line, key and value."""

from __future__ import annotations

from pathlib import Path

import pytest

from swayscope.errors import SpecError, SwayscopeError
from swayscope.suite.spec import load_suite, load_suite_text

GOOD = """\
version: 1
name: s
models:
  kind: dummy
defaults:
  seed: 3
  top_k: 32
telemetry:
  capture_prompts: false
suite:
  - kind: null_adapter
    n: 2
  - kind: delta_kl
    prompts: ["a b c", "d e f"]
  - kind: perplexity_shift
    name: ppl
"""


def test_valid_spec_builds_probes_in_order() -> None:
    loaded = load_suite_text(GOOD, "good.yaml")
    assert [p.spec.label for p in loaded.probes] == ["null_adapter", "delta_kl", "ppl"]
    assert loaded.spec.defaults.top_k == 32
    assert loaded.spec.models.kind == "dummy"


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("version: 1\nsuite: [\n", ["bad.yaml", "not valid YAML"]),
        ("- just\n- a list\n", ["bad.yaml", "mapping"]),
        (
            "version: 1\nmodels:\n  kind: dummy\n  colour: red\nsuite:\n  - kind: delta_kl\n",
            ["bad.yaml:4", "models.colour", "red", "remove it"],
        ),
        (
            "version: 1\ndefaults:\n  top_k: many\nsuite:\n  - kind: delta_kl\n",
            ["bad.yaml:3", "defaults.top_k", "'many'"],
        ),
        (
            "version: 1\ndefaults:\n  top_k: 0\nsuite:\n  - kind: delta_kl\n",
            ["bad.yaml:3", "defaults.top_k", "0"],
        ),
        (
            "version: 1\nsuite:\n  - kind: delta_kl\n  - kind: teleport\n",
            ["bad.yaml:4", "suite.1.kind", "'teleport'", "delta_kl"],
        ),
        ("version: 1\nsuite: []\n", ["bad.yaml", "suite", "no probes"]),
        (
            "version: 1\nsuite:\n  - kind: delta_kl\n    prompts: []\n",
            ["bad.yaml:4", "suite.0.prompts", "[]"],
        ),
        (
            "version: 1\nsuite:\n  - kind: delta_kl\n    bogus: 1\n",
            ["bad.yaml:4", "suite.0.bogus", "remove it"],
        ),
        (
            "version: 1\nsuite:\n  - kind: delta_kl\n  - kind: null_adapter\n",
            ["bad.yaml:4", "must come first"],
        ),
        (
            "version: 1\nsuite:\n  - kind: delta_kl\n  - kind: delta_kl\n",
            ["bad.yaml:4", "already used", "name"],
        ),
        ("version: 2\nsuite:\n  - kind: delta_kl\n", ["bad.yaml:1", "version", "2"]),
    ],
)
def test_bad_specs_name_file_line_key_and_value(text: str, fragments: list[str]) -> None:
    with pytest.raises(SpecError) as info:
        load_suite_text(text, "bad.yaml")
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_missing_spec_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="does not exist"):
        load_suite(tmp_path / "nope.yaml")


def test_relative_model_paths_resolve_against_the_spec_folder(tmp_path: Path) -> None:
    spec = tmp_path / "sub" / "s.yaml"
    spec.parent.mkdir()
    spec.write_text(
        "version: 1\nmodels:\n  kind: hf\n  base: m/base\n  adapter: /abs/adapter\n"
        "suite:\n  - kind: delta_kl\n"
    )
    loaded = load_suite(spec)
    assert loaded.spec.models.base == spec.parent / "m" / "base"
    assert loaded.spec.models.adapter == Path("/abs/adapter")


def test_telemetry_values_are_checked_with_their_file_and_line(tmp_path: Path) -> None:
    from swayscope.suite.telemetry import run_settings

    text = (
        "version: 1\ntelemetry:\n  trace: t.jsonl\n  pushgateway: ftp://gw\n"
        "suite:\n  - kind: delta_kl\n"
    )
    with pytest.raises(SwayscopeError) as info:
        run_settings(load_suite_text(text, "s.yaml"), env={})
    assert "telemetry.pushgateway (s.yaml:4)" in str(info.value)
    settings = run_settings(
        load_suite_text(text.replace("ftp://gw", "gw:9091"), "s.yaml"),
        {"trace": tmp_path / "flag.jsonl", "metrics_port": None}, {"trace": "--trace"}, env={},
    )
    assert settings.trace == tmp_path / "flag.jsonl" and settings.source("trace") == "--trace"
    assert settings.source("pushgateway") == "telemetry.pushgateway (s.yaml:4)"


def test_run_settings_in_defaults_and_their_flag_overrides(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from swayscope.suite import spec
    from swayscope.suite.spec import override_defaults

    monkeypatch.setattr(spec, "usable_cpus", lambda: 4)  # the bound on threads
    loaded = load_suite_text(GOOD.replace("  top_k: 32\n", "  top_k: 32\n  threads: 2\n"), "s.yaml")
    assert loaded.spec.defaults.threads == 2
    assert loaded.spec.defaults.prefix_cache_max_bytes > 0
    override_defaults(loaded, {"threads": None}, {"threads": "--threads"})
    assert loaded.spec.defaults.threads == 2  # not given: the spec's value stands
    override_defaults(loaded, {"threads": 4}, {"threads": "--threads"})
    assert loaded.spec.defaults.threads == 4 and loaded.spec.defaults.top_k == 32
    with pytest.raises(SpecError, match=r"--threads: .*greater than 0.*got 0"):
        override_defaults(loaded, {"threads": 0}, {"threads": "--threads"})
    with pytest.raises(SpecError, match=r"--threads: more than the 4 CPU\(s\).*got 5"):
        override_defaults(loaded, {"threads": 5}, {"threads": "--threads"})
    for bad in ("  threads: 0\n", "  threads: 5\n", "  prefix_cache_max_bytes: -1\n"):
        with pytest.raises(SpecError, match=r"s.yaml:\d+: defaults\."):
            load_suite_text(GOOD.replace("  top_k: 32\n", "  top_k: 32\n" + bad), "s.yaml")
