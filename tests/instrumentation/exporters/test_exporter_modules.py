"""The exporter packages' small parts: settings from the environment, the lookup metrics,
names defined once, and public library API only."""

from __future__ import annotations

import ast
import logging
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

import swayscope.instrumentation.exporters as exporters_pkg
from swayscope.instrumentation.events import ForwardCall
from swayscope.instrumentation.exporters.otel.environment import (
    DEFAULT_EXPORT_TIMEOUT_S,
    DEFAULT_MAX_EXPORT_BATCH_SIZE,
    DEFAULT_MAX_QUEUE_SIZE,
    DEFAULT_SCHEDULE_DELAY_S,
    BatchSettings,
    batch_settings,
    export_timeout_s,
)
from swayscope.instrumentation.exporters.prometheus.lookups import LookupMetrics

EXPORTERS = Path(exporters_pkg.__file__).parent


def test_batch_settings_arguments_then_environment_then_defaults(
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert batch_settings({}) == BatchSettings(
        DEFAULT_MAX_QUEUE_SIZE, DEFAULT_SCHEDULE_DELAY_S, DEFAULT_MAX_EXPORT_BATCH_SIZE
    )
    env = {
        "OTEL_BSP_MAX_QUEUE_SIZE": "100",
        "OTEL_BSP_SCHEDULE_DELAY": "250",
        "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "30",
    }
    assert batch_settings(env) == BatchSettings(100, 0.25, 30)
    assert batch_settings(env, max_queue_size=10, schedule_delay_s=2.0) == BatchSettings(
        10, 2.0, 10  # a batch never exceeds the queue
    )
    with caplog.at_level(logging.WARNING):
        settings = batch_settings({"OTEL_BSP_MAX_QUEUE_SIZE": "lots"})
    assert settings.max_queue_size == DEFAULT_MAX_QUEUE_SIZE
    assert "OTEL_BSP_MAX_QUEUE_SIZE" in caplog.text and "'lots'" in caplog.text


def test_export_timeout_defers_to_the_otlp_variables() -> None:
    assert export_timeout_s({}, DEFAULT_EXPORT_TIMEOUT_S) == DEFAULT_EXPORT_TIMEOUT_S
    assert export_timeout_s({"OTEL_EXPORTER_OTLP_TIMEOUT": "7000"}, 3.0) is None
    assert export_timeout_s({"OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "7000"}, 3.0) is None


def _forward(evictions: int, entries: int = 1, nbytes: int = 10) -> ForwardCall:
    return ForwardCall(
        "run", "next_token_dist", "base", "base", None, 8, "b", 1, 0, 1, ["h"], 0, 0.01,
        cache_entries=entries, cache_bytes=nbytes, cache_evictions=evictions,
    )


def test_cache_gauges_count_evictions_across_caches() -> None:
    registry = CollectorRegistry()
    metrics = LookupMetrics(registry, lambda metric: metric)
    metrics.forward(_forward(3, 10, 1000))
    metrics.forward(_forward(5, 9, 900))
    metrics.forward(_forward(1, 2, 100))  # a new cache (a new instrumentation): counted whole
    value = registry.get_sample_value
    assert value("swayscope_cache_evictions_total") == 6
    assert value("swayscope_cache_entries") == 2 and value("swayscope_cache_bytes") == 100
    calls = value("swayscope_forward_calls_total", {"op": "next_token_dist", "view_kind": "base"})
    assert calls == 3


def _modules(package: str) -> list[Path]:
    return sorted((EXPORTERS / package).glob("*.py"))


def _string_literals(tree: ast.Module) -> list[str]:
    """Every string constant except docstrings (statement-level strings)."""
    docstrings = {
        id(node.value) for node in ast.walk(tree)
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
    }
    return [
        node.value for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
        and id(node) not in docstrings
    ]


@pytest.mark.parametrize(
    ("package", "home", "prefixes"),
    [
        ("otel", "attributes.py", ("swayscope.", "gen_ai.")),
        ("prometheus", "metrics.py", ("swayscope_",)),
    ],
)
def test_telemetry_names_are_defined_in_one_module(
    package: str, home: str, prefixes: tuple[str, ...]
) -> None:
    for path in _modules(package):
        if path.name == home:
            continue
        literals = _string_literals(ast.parse(path.read_text()))
        named = [s for s in literals if s.startswith(prefixes)]
        assert named == [], f"{path.name} spells telemetry names itself: {named}"


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


@pytest.mark.parametrize("package", ["otel", "prometheus"])
def test_only_public_library_api(package: str) -> None:
    """No private module or name of a library imported, no private attribute of another
    object read or written (``self._x`` is our own)."""
    for path in _modules(package):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not any(_private(p) for p in node.module.split(".")), path.name
                assert not any(_private(a.name) for a in node.names), path.name
            if isinstance(node, ast.Attribute) and _private(node.attr):
                owner = node.value
                ours = isinstance(owner, ast.Name) and owner.id in ("self", "cls")
                assert ours, f"{path.name}:{node.lineno} reaches into {ast.unparse(node)}"
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                if node.func.id in ("getattr", "setattr", "hasattr") and len(node.args) > 1:
                    name = node.args[1]
                    assert not (
                        isinstance(name, ast.Constant) and _private(str(name.value))
                    ), f"{path.name}:{node.lineno} reaches into {ast.unparse(node)}"
                # spans come from the tracer, never built by hand
                assert node.func.id != "ReadableSpan", f"{path.name}:{node.lineno}"


@pytest.mark.parametrize("package", ["otel", "prometheus"])
def test_modules_stay_small(package: str) -> None:
    for path in _modules(package):
        assert len(path.read_text().splitlines()) <= 400, path.name
