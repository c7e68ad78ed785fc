"""The anchor workload of bench/bench_anchor.py on the tiny model: the CI-sized smoke.

The same code paths as the SmolLM2 bench (its LoRA writer, its suite, its result
comparison), in process: prefix reuse on and off give the same results, the
thread count reaches the result and ``run_info``'s event, and the prefix counters
reach ``backend_stats``.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

from sway_testing import Recorder

from swayscope.backends.tiny import TinyModelPaths
from swayscope.instrumentation import BackendInstrumentation
from swayscope.instrumentation.events import RunStarted
from swayscope.suite.result import SuiteResult
from swayscope.suite.runner import build_backend, run_suite
from swayscope.suite.spec import load_suite_text

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_anchor.py"


@pytest.fixture(scope="module")
def anchor() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_anchor", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_anchor"] = module
    spec.loader.exec_module(module)
    return module


def _run(text: str, recorder: Recorder) -> SuiteResult:
    loaded = load_suite_text(text, "anchor")
    inst = BackendInstrumentation(exporters=[recorder])
    backend = build_backend(loaded.spec.models, loaded.spec.defaults, inst)
    try:
        return run_suite(loaded, backend, live_progress=False)
    finally:
        backend.close()


def test_anchor_suite_same_with_and_without_prefix_reuse(
    anchor: ModuleType, tiny_model: TinyModelPaths, tmp_path: Path
) -> None:
    adapter = anchor.write_lora(tiny_model.base_dir, tmp_path / "lora", seed=0)
    again = anchor.write_lora(tiny_model.base_dir, tmp_path / "lora2", seed=0)
    assert (adapter / "adapter_model.safetensors").read_bytes() == (
        again / "adapter_model.safetensors"
    ).read_bytes(), "the bench's LoRA is deterministic"
    results = {}
    for reuse in (True, False):
        spec = json.loads(anchor.swayscope_spec(tiny_model.base_dir, adapter, prefix_reuse=reuse))
        spec["defaults"]["threads"] = 1
        recorder = Recorder()
        results[reuse] = _run(json.dumps(spec), recorder)
        (started,) = [e for e in recorder.events if isinstance(e, RunStarted)]
        assert started.threads == 1 and results[reuse].threads == 1
    on, off = results[True], results[False]
    assert [p.verdict for p in on.probes] == [p.verdict for p in off.probes]
    assert all(p.error is None for p in on.probes)
    diff, where = anchor.max_difference(on.to_dict(), off.to_dict())
    assert diff <= anchor.TOLERANCE, where
    s_on, s_off = on.backend_stats, off.backend_stats
    assert s_on["n_tokens"] == s_off["n_tokens"] == s_off["tokens_computed"]
    assert s_on["tokens_computed"] < s_on["n_tokens"] / 2
    assert s_on["prefix_tokens_reused"] > 0 and s_on["prefix_hits"] > 0
    assert s_off["prefix_hits"] == 0 and s_off["prefix_entries"] == 0
    assert json.loads(on.to_json())["threads"] == 1
    collapse = next(p for p in on.probes if p.kind == "prompt_collapse")
    assert collapse.evidence["context_tokens"] == list(anchor.CONTEXT_TOKENS)
