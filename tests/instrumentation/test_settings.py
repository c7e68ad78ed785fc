"""TelemetrySettings: one name per setting across spec, flags and Python; sources in errors."""

from __future__ import annotations

import pytest

from swayscope.cli import TELEMETRY_FLAGS
from swayscope.errors import TelemetryConfigError
from swayscope.instrumentation.settings import SECRET_SETTINGS, SETTING_NAMES, resolve_settings
from swayscope.suite.spec import TelemetrySpec


def test_every_setting_has_one_name_in_the_spec_the_flags_and_the_model() -> None:
    assert set(TelemetrySpec.model_fields) == set(SETTING_NAMES)
    assert set(TELEMETRY_FLAGS) == set(SETTING_NAMES) - set(SECRET_SETTINGS)


def test_defaults_and_checked_values() -> None:
    s = resolve_settings(env={})
    assert (s.trace, s.otel, s.prometheus, s.metrics_address) == (None, False, False, "127.0.0.1")
    s = resolve_settings(
        {"metrics_port": "9464", "metrics_linger_s": "2.5", "pushgateway": "gw:9091",
         "capture_prompts": "true", "otlp_endpoint": "http://c:4318"},
        env={},
    )
    assert s.metrics_port == 9464 and s.metrics_linger_s == 2.5
    assert s.pushgateway == "http://gw:9091" and s.capture_prompts is True
    assert s.otel and s.otlp_explicit and s.otlp_endpoint is not None
    assert s.otlp_endpoint.endpoint == "http://c:4318/v1/traces"


def test_errors_name_the_source_the_caller_gave() -> None:
    with pytest.raises(TelemetryConfigError, match=r"telemetry\.metrics_port \(s\.yaml:7\)"):
        resolve_settings({"metrics_port": 1e9}, sources={"metrics_port":
                                                         "telemetry.metrics_port (s.yaml:7)"})
    with pytest.raises(TelemetryConfigError, match="'x' for metrics_port"):
        resolve_settings({"metrics_port": "x"})


def test_unknown_setting_is_named_with_a_suggestion() -> None:
    with pytest.raises(TelemetryConfigError, match="did you mean 'metrics_port'"):
        resolve_settings({"metric_port": 1})


def test_a_huge_bad_value_is_not_echoed_whole() -> None:
    with pytest.raises(TelemetryConfigError) as err:
        resolve_settings({"pushgateway": "ftp://" + "x" * 100_000})
    assert len(str(err.value)) < 400
