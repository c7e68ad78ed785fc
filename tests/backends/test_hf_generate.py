"""Greedy generation on the tiny model: batched with left padding, equal to
``model.generate(do_sample=False)`` one prompt at a time, stop strings, cache keys."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

from sway_testing import Recorder

from swayscope.backends.api import GENERATE_OP, Generation
from swayscope.backends.hf import HFBackend
from swayscope.backends.tiny import TinyModelPaths
from swayscope.errors import InputError
from swayscope.instrumentation import BackendInstrumentation
from swayscope.instrumentation.events import ForwardCall

#: Prompts of different lengths, so a batch pads most of them on the left.
PROMPTS = [
    "The keeper lit the lamp",
    "Fog",
    "Once upon a time, in a small village by the sea, there lived a",
    "The river ran fast in the spring. It carried branches, leaves and once a small",
    "Keeper's log. The wind fell.",
]


def plain_generate(backend: HFBackend, prompt: str, max_new_tokens: int, **kw: Any) -> list[int]:
    """The new token ids of transformers' own greedy ``generate`` on the unpadded prompt."""
    ids = backend.tokenizer(prompt, return_tensors="pt")
    out = backend.model.generate(
        **ids, do_sample=False, max_new_tokens=max_new_tokens,
        pad_token_id=backend.encoder.pad_id, **kw,
    )
    new: list[int] = out[0, ids["input_ids"].shape[1] :].tolist()
    return new


@pytest.mark.parametrize("view", ["base", "ft"])
def test_a_batch_equals_plain_generate_one_prompt_at_a_time(
    hf_backend: HFBackend, view: str
) -> None:
    with getattr(hf_backend, view)() as v:
        batch = v.generate_batch(PROMPTS, max_new_tokens=20)
        for prompt, got in zip(PROMPTS, batch, strict=True):
            new = plain_generate(hf_backend, prompt, 20)
            assert got.n_generated == len(new) == 20
            assert got.text == hf_backend.tokenizer.decode(new, skip_special_tokens=True)
            assert got.finish == "length"
            assert got.n_tokens == len(hf_backend.tokenize(prompt))
    assert hf_backend.inst.stats.forward_calls == 1


def test_alone_and_in_a_batch_give_the_same_answer(tiny_model: TinyModelPaths) -> None:
    answers: list[list[Generation]] = []
    for batched in (True, False):
        backend = HFBackend(tiny_model.base_dir, tiny_model.adapter_dir, device="cpu")
        try:
            with backend.ft() as v:
                answers.append(
                    v.generate_batch(PROMPTS, max_new_tokens=16)
                    if batched
                    else [v.generate(p, max_new_tokens=16) for p in PROMPTS]
                )
        finally:
            backend.close()
    assert answers[0] == answers[1]
    assert len({g.text for g in answers[0]}) > 1


def test_the_adapter_changes_what_is_generated(hf_backend: HFBackend) -> None:
    with hf_backend.base() as v:
        base = v.generate_batch(PROMPTS, max_new_tokens=16)
    with hf_backend.ft() as v:
        ft = v.generate_batch(PROMPTS, max_new_tokens=16)
    assert [g.text for g in base] != [g.text for g in ft]


def test_a_stop_string_cuts_the_text_and_ends_the_row(hf_backend: HFBackend) -> None:
    with hf_backend.ft() as v:
        free = v.generate_batch(PROMPTS, max_new_tokens=24)
        # A stop string each row reaches at a different point: the text after its first
        # few characters.
        stop = free[0].text[3:6]
        assert stop.strip()
        cut = v.generate_batch(PROMPTS, max_new_tokens=24, stop=[stop])
        alone = [v.generate(p, max_new_tokens=24, stop=[stop]) for p in PROMPTS[:1]]
    assert cut[0] == alone[0]
    for whole, got in zip(free, cut, strict=True):
        if stop in whole.text:
            assert got.finish == "stop"
            assert got.text == whole.text[: whole.text.index(stop)]
            assert got.n_generated < whole.n_generated
            assert stop not in got.text
        else:
            assert got == whole
    assert cut[0].finish == "stop"


def test_the_end_of_sequence_token_ends_a_row(hf_backend: HFBackend) -> None:
    with hf_backend.ft() as v:
        free = v.generate(PROMPTS[0], max_new_tokens=12)
    first = hf_backend.tokenizer(free.text, add_special_tokens=False)["input_ids"][2]
    hf_backend.generator.eos = [first]
    hf_backend.inst.cache.clear()
    with hf_backend.ft() as v:
        got = v.generate_batch(PROMPTS, max_new_tokens=12)
        new = plain_generate(hf_backend, PROMPTS[0], 12, eos_token_id=first)
    assert got[0].finish == "eos"
    assert got[0].n_generated == len(new) == new.index(first) + 1 < 12
    assert got[0].text == hf_backend.tokenizer.decode(new, skip_special_tokens=True)


def test_the_cache_keys_on_the_limit_and_the_stop_strings(tiny_model: TinyModelPaths) -> None:
    rec = Recorder()
    inst = BackendInstrumentation(exporters=[rec])
    backend = HFBackend(tiny_model.base_dir, tiny_model.adapter_dir, device="cpu", inst=inst)
    try:
        with backend.ft() as v:
            first = v.generate_batch(PROMPTS, max_new_tokens=8, stop=["x", "."])
            again = v.generate_batch(PROMPTS, max_new_tokens=8, stop=[".", "x", "x"])
            v.generate_batch(PROMPTS[:2], max_new_tokens=9, stop=["x", "."])
            v.generate_batch(PROMPTS[:2], max_new_tokens=8)
        with backend.base() as v:
            v.generate_batch(PROMPTS[:1], max_new_tokens=8, stop=["x", "."])
    finally:
        backend.close()
    assert again == first
    calls = [c for c in rec.calls() if c.op == GENERATE_OP]
    assert [c.batch_size for c in calls] == [5, 2, 2, 1]
    assert inst.stats.cache_hits == 5
    assert all(isinstance(c, ForwardCall) and c.view_id in ("ft", "base") for c in calls)


def test_a_short_and_a_long_prompt_share_one_call(hf_backend: HFBackend) -> None:
    """Each generated token is a model call: padding the short prompt costs less than a
    second call of eight steps, which a forward call's planning would choose."""
    hf_backend.call_overhead_tokens = 64
    long = hf_backend.token_prefix("The lamp was lit at dusk and the fog came in. ", 200)
    with hf_backend.ft() as v:
        v.generate_batch(["Fog", long], max_new_tokens=8)
    assert hf_backend.inst.stats.forward_calls == 1


def test_a_long_prompt_stops_at_the_context(hf_backend: HFBackend) -> None:
    context = hf_backend.context_length
    assert context is not None
    near = hf_backend.token_prefix("The lamp was lit at dusk and the fog came in. ", context - 4)
    with hf_backend.ft() as v:
        got = v.generate_batch([near, PROMPTS[1]], max_new_tokens=10)
    n_prompt = len(hf_backend.tokenize(near))
    assert got[0].n_generated == context - n_prompt
    assert got[0].finish == "length"
    assert got[1].n_generated == 10


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_new_tokens": 0}, "max_new_tokens must be an integer 1..4096"),
        ({"max_new_tokens": True}, "max_new_tokens"),
        ({"stop": "."}, r"not one string.*stop=\['\.'\]"),
        ({"stop": [""]}, r"stop\[0\] must be a non-empty string"),
    ],
)
def test_bad_generation_arguments(
    hf_backend: HFBackend, kwargs: dict[str, Any], match: str
) -> None:
    with hf_backend.ft() as v, pytest.raises(InputError, match=match):
        v.generate_batch(PROMPTS[:1], **kwargs)
    assert hf_backend.inst.stats.forward_calls == 0


def test_generated_tokens_reach_the_stats_the_metrics_and_the_spans(
    tiny_model: TinyModelPaths,
) -> None:
    pytest.importorskip("opentelemetry.sdk")
    pytest.importorskip("prometheus_client")
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from swayscope.instrumentation.exporters.otel import OtelExporter
    from swayscope.instrumentation.exporters.prometheus import PrometheusExporter

    rec, mem = Recorder(), InMemorySpanExporter()
    prom = PrometheusExporter()
    otel = OtelExporter(span_exporter=mem, batch=False)
    inst = BackendInstrumentation(exporters=[rec, prom, otel])
    backend = HFBackend(tiny_model.base_dir, tiny_model.adapter_dir, device="cpu", inst=inst)
    try:
        with inst.run(suite="gen", total_probes=1), inst.probe("leak", "leakage"):
            with backend.ft() as v:
                got = v.generate_batch(PROMPTS, max_new_tokens=6, stop=["."])
                v.generate_batch(PROMPTS, max_new_tokens=6, stop=["."])  # all hits
            with backend.base() as v:
                v.logprob_of(PROMPTS[0], " lamp")  # a scoring call: no generated tokens
    finally:
        backend.close()
        inst.close()
    generated = sum(g.n_generated for g in got)
    assert 0 < generated <= 6 * len(PROMPTS)
    calls = rec.calls()
    assert [(c.op, c.n_tokens_generated) for c in calls] == [
        (GENERATE_OP, generated), ("logprob_of", None),
    ]
    assert inst.stats.tokens_generated == generated
    value = prom.registry.get_sample_value(
        "swayscope_generated_tokens_total", {"view_kind": "ft"}
    )
    assert value == generated
    assert prom.registry.get_sample_value(
        "swayscope_generated_tokens_total", {"view_kind": "base"}
    ) == 0
    forward = [s for s in mem.get_finished_spans() if s.name == "swayscope.forward"]
    assert [s.attributes.get("gen_ai.usage.output_tokens") for s in forward  # type: ignore[union-attr]
            ] == [generated, None]
