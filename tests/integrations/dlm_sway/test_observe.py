"""dlm-sway's runner functions wrapped: a run scope, and a probe scope with each verdict."""

from __future__ import annotations

from types import ModuleType, SimpleNamespace
from typing import Any

from sway_testing import Recorder

from swayscope.instrumentation import BackendInstrumentation, ProbeEnded, RunEnded, RunStarted
from swayscope.integrations.dlm_sway.observe import ObservedProbe, instrument_runner

SECRET = "my account number is 4711-0815"


class _Probe:
    """A dlm-sway-like probe: ``run(spec, ctx)`` returns a result with a verdict enum."""

    def __init__(self, verdict: str, message: str = "") -> None:
        self.verdict, self.message = verdict, message
        self.kind = "delta_kl"

    def run(self, spec: Any, ctx: Any) -> Any:
        ctx.backend._inst.cached("next_token_dist", "base", spec.prompts[0], 8, lambda: 1)
        return SimpleNamespace(verdict=SimpleNamespace(value=self.verdict), score=0.25,
                               message=self.message)


def _runner(probes: dict[str, _Probe]) -> ModuleType:
    module = ModuleType("runner")

    def build_probe(raw: dict[str, Any]) -> tuple[Any, Any]:
        return probes[raw["name"]], SimpleNamespace(**raw)

    def run(spec: Any, backend: Any, *, spec_path: str = "<memory>") -> list[Any]:
        out = []
        for raw in spec.suite:
            probe, probe_spec = module.build_probe(raw)
            if raw.get("enabled", True):
                out.append(probe.run(probe_spec, SimpleNamespace(backend=backend)))
        return out

    module.build_probe, module.run = build_probe, run  # type: ignore[attr-defined]
    return module


def test_a_run_and_its_probes_become_scopes_with_dlm_sways_verdicts() -> None:
    recorder = Recorder()
    backend = SimpleNamespace(_inst=BackendInstrumentation(exporters=[recorder]))
    runner = _runner({"ok": _Probe("pass"), "bad": _Probe("fail"), "off": _Probe("pass")})
    instrument_runner(runner)
    suite = [
        {"name": "ok", "kind": "delta_kl", "prompts": ["a"]},
        {"name": "bad", "kind": "delta_kl", "prompts": ["b"]},
        {"name": "off", "kind": "delta_kl", "prompts": ["c"], "enabled": False},
    ]
    spec = SimpleNamespace(suite=suite, models=SimpleNamespace(
        ft=SimpleNamespace(base="/m/base", adapter="/m/lora")))
    results = runner.run(spec, backend, spec_path="/x/sway.yaml")  # type: ignore[attr-defined]
    assert [r.verdict.value for r in results] == ["pass", "fail"]
    started = next(e for e in recorder.events if isinstance(e, RunStarted))
    assert (started.suite, started.base_model, started.adapter) == ("sway", "/m/base", "/m/lora")
    assert started.probes == ("ok", "bad") and started.total_probes == 2
    ended = [e for e in recorder.events if isinstance(e, ProbeEnded)]
    assert [(e.probe, e.kind, e.status, e.score) for e in ended] == [
        ("ok", "delta_kl", "pass", 0.25), ("bad", "delta_kl", "fail", 0.25),
    ]
    assert [e.probe for e in recorder.lookups()] == ["ok", "bad"]
    assert isinstance(recorder.events[-1], RunEnded) and backend._inst.model_name == "/m/base"


def test_an_error_verdicts_message_leaves_without_prompt_text() -> None:
    recorder = Recorder()
    inst = BackendInstrumentation(exporters=[recorder])
    probe = ObservedProbe(_Probe("error", f"could not score {SECRET!r}"))
    spec = SimpleNamespace(name="dk", kind="delta_kl", prompts=[SECRET])
    probe.run(spec, SimpleNamespace(backend=SimpleNamespace(_inst=inst)))
    ended = next(e for e in recorder.events if isinstance(e, ProbeEnded))
    assert ended.status == "error" and ended.error is not None
    assert SECRET not in ended.error and f"<prompt {inst.hash_prompt(SECRET)}>" in ended.error
    assert probe.kind == "delta_kl"  # everything but run is the probe's own


def test_a_backend_without_swayscope_instrumentation_is_left_alone() -> None:
    runner = _runner({"ok": _Probe("pass")})
    instrument_runner(runner)

    class Counting:
        def __init__(self) -> None:
            self.calls = 0

        def cached(self, *args: Any) -> int:
            self.calls += 1
            return 1

    backend = SimpleNamespace(_inst=Counting())
    spec = SimpleNamespace(suite=[{"name": "ok", "kind": "delta_kl", "prompts": ["a"]}])
    results = runner.run(spec, backend)  # type: ignore[attr-defined]
    assert [r.verdict.value for r in results] == ["pass"] and backend._inst.calls == 1
