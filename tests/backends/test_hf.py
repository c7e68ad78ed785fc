"""HFBackend on the tiny offline model: views, the shared forward record, batching, errors."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

import torch
from sway_testing import Recorder

from swayscope.backends.api import DifferentialBackend, ScoringView, TokenDist
from swayscope.backends.hf import FORWARD_OP, HFBackend, plan_batches
from swayscope.backends.hf.planner import make_planner
from swayscope.backends.tiny import TinyModelPaths
from swayscope.errors import (
    BackendError,
    ConfigError,
    InputError,
    ModelLoadError,
    SwayscopeError,
    ViewError,
)
from swayscope.instrumentation import BackendInstrumentation
from swayscope.instrumentation.events import ForwardCall, ViewEntered, ViewExited

PROMPTS = [
    "The lamp was lit at",
    "In the village there was a bakery, a school, a small library and a shop",
    "Fog",
    "The river ran fast in the spring. It carried branches, leaves and once a small",
    "Keeper's log. The wind fell.",
    "A model of language is a machine that reads the first part of a sentence",
    "Numbers are useful",
    "The cat slept on the warm stones by the fire. The dog slept by the door.",
]


@pytest.fixture(scope="module")
def checking_backend(tiny_model: TinyModelPaths) -> Iterator[HFBackend]:
    """One backend for the tests that only check that bad input raises.

    Those tests never compute, cache or reconfigure anything, so they can share it
    instead of loading the model each; a test that scores or patches uses ``hf_backend``.
    """
    backend = HFBackend(tiny_model.base_dir, tiny_model.adapter_dir, device="cpu")
    try:
        yield backend
    finally:
        backend.close()


def _calls(b: HFBackend) -> int:
    return b.inst.stats.forward_calls


def _assert_dist_close(a: TokenDist, b: TokenDist, tol: float = 1e-4) -> None:
    assert a.vocab_size == b.vocab_size
    np.testing.assert_allclose(a.logprobs, b.logprobs, atol=tol)
    # ids may only differ where probabilities tie within tolerance
    differ = a.token_ids != b.token_ids
    if differ.any():
        np.testing.assert_allclose(a.logprobs[differ], b.logprobs[differ], atol=tol)
    assert math.isclose(a.tail_logprob, b.tail_logprob, abs_tol=tol)


def _mass(d: TokenDist) -> float:
    return float(np.exp(d.logprobs).sum() + math.exp(d.tail_logprob))


# -- protocol & identity ----------------------------------------------------------------


def test_backend_follows_protocol(hf_backend: HFBackend) -> None:
    backend: DifferentialBackend = hf_backend
    assert backend.model_name == "tiny-llama"
    assert backend.adapter_name == "tiny-lora"
    assert hf_backend.inst.model_name == "tiny-llama"
    assert hf_backend.device.type == "cpu" and hf_backend.dtype == torch.float32
    assert hf_backend.adapter_hash[:16] in (hf_backend.inst.model_id or "")
    assert str(hf_backend.base_path.resolve()) in (hf_backend.inst.model_id or "")
    with hf_backend.ft() as view:
        assert isinstance(view, ScoringView)
        assert (view.id, view.kind) == ("ft", "ft")


def test_model_identity_changes_with_adapter_content(
    tiny_model: TinyModelPaths, tmp_path: Path
) -> None:
    other = tmp_path / "other-lora"
    shutil.copytree(tiny_model.adapter_dir, other)
    cfg_path = other / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["lora_alpha"] = 32
    cfg_path.write_text(json.dumps(cfg))
    a = HFBackend(tiny_model.base_dir, tiny_model.adapter_dir, device="cpu")
    b = HFBackend(tiny_model.base_dir, other, device="cpu")
    assert a.inst.model_id != b.inst.model_id
    with pytest.raises(ConfigError, match="already belongs"):
        HFBackend(tiny_model.base_dir, other, device="cpu", inst=a.inst)


# -- the shared forward record -------------------------------------------------------------


def test_one_forward_serves_every_op(hf_backend: HFBackend) -> None:
    text = "The lamp was lit at sunset"
    with hf_backend.ft() as view:
        rolling = view.rolling_logprob(text)
        assert _calls(hf_backend) == 1
        dist = view.next_token_dist(text, top_k=8)
        lp = view.logprob_of("The lamp was lit", " at sunset")
        assert _calls(hf_backend) == 1, "next_token_dist/logprob_of must reuse the record"
        # the batched forms share it too; only the new text costs a forward
        view.next_token_dist_batch([text, "Fog at dawn"], top_k=4)
        view.rolling_logprob_batch([text])
        view.logprob_of_batch([("The lamp", " was lit at sunset")])
        assert _calls(hf_backend) == 2
    assert dist.top_k == 8 and dist.n_tokens == rolling.n_tokens
    assert rolling.logprobs.shape == (rolling.n_tokens - 1,)
    assert hf_backend.inst.stats.cache_hits >= 5
    # logprob_of is the sum of the completion tokens' rolling logprobs
    start = len(hf_backend.tokenize("The lamp was lit"))
    assert lp == pytest.approx(float(rolling.logprobs[start - 1 :].sum()), abs=1e-9)
    keys = hf_backend.inst.cache.keys()
    assert all(k[1] == FORWARD_OP for k in keys) and len(keys) == 2


def test_top_k_is_sliced_from_the_cached_record(hf_backend: HFBackend) -> None:
    prompt = PROMPTS[0]
    with hf_backend.base() as view:
        d256 = view.next_token_dist(prompt, top_k=256)
        d8 = view.next_token_dist(prompt, top_k=8)
        d1 = view.next_token_dist(prompt, top_k=1)
    assert _calls(hf_backend) == 1
    assert d256.top_k == 256 and d8.top_k == 8 and d1.top_k == 1
    np.testing.assert_array_equal(d8.token_ids, d256.token_ids[:8])
    np.testing.assert_array_equal(d8.logprobs, d256.logprobs[:8])
    assert np.all(np.diff(d256.logprobs) <= 0), "sorted by descending probability"
    for d in (d256, d8, d1):
        assert _mass(d) == pytest.approx(1.0, abs=1e-5)
    assert d256.vocab_size == hf_backend.vocab_size == 1024


def test_full_vocab_top_k_and_limit(tiny_model: TinyModelPaths) -> None:
    b = HFBackend(tiny_model.base_dir, tiny_model.adapter_dir, device="cpu", max_top_k=4096)
    with b.ft() as view:
        d = view.next_token_dist("Fog", top_k=4096)
    assert d.top_k == 1024 and d.tail_logprob == -math.inf
    assert _mass(d) == pytest.approx(1.0, abs=1e-5)
    small = HFBackend(tiny_model.base_dir, tiny_model.adapter_dir, device="cpu", max_top_k=16)
    with small.ft() as view, pytest.raises(InputError, match=r"top_k=17.*max_top_k=16"):
        view.next_token_dist("Fog", top_k=17)


# -- batching -------------------------------------------------------------------------------


def test_batched_equals_serial(tiny_model: TinyModelPaths) -> None:
    serial = HFBackend(tiny_model.base_dir, tiny_model.adapter_dir, device="cpu")
    batched = HFBackend(tiny_model.base_dir, tiny_model.adapter_dir, device="cpu", max_batch_size=5)
    pairs = [(p[: len(p) // 2], p[len(p) // 2 :]) for p in PROMPTS]
    for factory in ("ft", "base"):
        with getattr(serial, factory)() as sv:
            s_roll = [sv.rolling_logprob(p) for p in PROMPTS]
            s_dists = [sv.next_token_dist(p, top_k=64) for p in PROMPTS]
            s_lp = [sv.logprob_of(p, c) for p, c in pairs]
        with getattr(batched, factory)() as bv:
            b_roll = bv.rolling_logprob_batch(PROMPTS)
            b_dists = bv.next_token_dist_batch(PROMPTS, top_k=64)
            b_lp = bv.logprob_of_batch(pairs)
        for a, b in zip(s_dists, b_dists, strict=True):
            _assert_dist_close(a, b)
        for ra, rb in zip(s_roll, b_roll, strict=True):
            np.testing.assert_array_equal(ra.token_ids, rb.token_ids)
            np.testing.assert_allclose(ra.logprobs, rb.logprobs, atol=1e-4)
        np.testing.assert_allclose(s_lp, b_lp, atol=1e-4)
    # next_token_dist and logprob_of (whose texts equal the prompts) were served from the
    # records rolling_logprob computed
    assert 1 < batched.inst.stats.max_batch_size <= 5
    assert batched.inst.stats.forward_calls <= 2 * 3
    assert serial.inst.stats.forward_calls == 2 * len(PROMPTS)


def test_token_budget_and_length_sorting(tiny_model: TinyModelPaths) -> None:
    b = HFBackend(
        tiny_model.base_dir,
        tiny_model.adapter_dir,
        device="cpu",
        max_batch_tokens=64,
        max_batch_size=3,
    )
    ids: dict[int, list[int]] = {}
    plan = make_planner(PROMPTS, ids, b.encoder.checked_ids, b.limits)
    groups = plan(list(range(len(PROMPTS))))
    assert sorted(i for g in groups for i in g) == list(range(len(PROMPTS)))
    flat = [len(ids[i]) for g in groups for i in g]
    assert flat == sorted(flat), "texts go out sorted by length"
    for g in groups:
        assert len(g) <= 3
        longest = max(len(ids[i]) for i in g)
        assert len(g) == 1 or longest * len(g) <= 64
    with b.ft() as view:
        view.rolling_logprob_batch(PROMPTS)
    assert b.inst.stats.forward_calls == len(groups)


def test_plan_batches_weighs_padding_against_calls() -> None:
    lengths = {0: 10, 1: 12, 2: 11, 3: 200, 4: 205, 5: 9}
    kw = {"max_batch_size": 8, "max_batch_tokens": 4096}
    assert plan_batches(lengths, call_overhead_tokens=10**6, **kw) == [[5, 0, 2, 1, 3, 4]]
    assert plan_batches(lengths, call_overhead_tokens=64, **kw) == [[5, 0, 2, 1], [3, 4]]
    assert plan_batches(lengths, call_overhead_tokens=0, **kw) == [[5], [0], [2], [1], [3], [4]]
    # the budget and the size cap always hold; a text over the budget goes alone
    tight = plan_batches(lengths, call_overhead_tokens=10**6, max_batch_size=3, max_batch_tokens=30)
    assert tight == [[5, 0], [2, 1], [3], [4]]
    assert plan_batches({}, call_overhead_tokens=64, **kw) == []


def test_fast_paths_match_transformers(hf_backend: HFBackend) -> None:
    assert hf_backend.encoder.fast, "the Rust tokenizer agrees on the tiny model"
    for text in PROMPTS:
        assert hf_backend.tokenize(text) == hf_backend.tokenizer(text)["input_ids"]
    forward = hf_backend.forward_pass
    assert forward.use_packed_head, "the packed output head is used on a Llama"
    batch = [hf_backend.tokenize(p) for p in PROMPTS]
    with hf_backend.ft():
        packed = forward.compute(batch)
        forward.use_packed_head = False
        try:
            full = forward.compute(batch)
        finally:
            forward.use_packed_head = True
    for a, b in zip(packed, full, strict=True):
        _assert_dist_close(a.dist, b.dist, tol=1e-5)
        np.testing.assert_allclose(a.rolling.logprobs, b.rolling.logprobs, atol=1e-5)


def test_left_padding_with_duplicates_and_hits(hf_backend: HFBackend) -> None:
    texts = ["Fog", PROMPTS[3], "Fog", PROMPTS[0]]
    with hf_backend.ft() as view:
        view.next_token_dist("Fog")
        out = view.next_token_dist_batch(texts, top_k=5)
    assert _calls(hf_backend) == 2
    assert out[0] is not None and out[0].token_ids.tolist() == out[2].token_ids.tolist()


def test_oom_batch_is_split_and_counted(
    hf_backend: HFBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    hf_backend.call_overhead_tokens = 10**6  # all eight texts in one forward call
    with hf_backend.ft() as view:
        expected = [r.logprobs.copy() for r in view.rolling_logprob_batch(PROMPTS)]
    hf_backend.inst.cache.clear()
    calls_before = _calls(hf_backend)
    real = hf_backend.forward_pass.run_model
    raised: list[int] = []

    def flaky(input_ids: torch.Tensor, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, Any]:
        if not raised and input_ids.shape[0] > 1:
            raised.append(int(input_ids.shape[0]))
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
        return real(input_ids, *args, **kwargs)

    monkeypatch.setattr(hf_backend.forward_pass, "run_model", flaky)
    with hf_backend.ft() as view:
        got = view.rolling_logprob_batch(PROMPTS)
    assert raised == [len(PROMPTS)]
    assert hf_backend.inst.stats.oom_splits == 1
    assert _calls(hf_backend) == calls_before + 1, "a split batch is still one forward call"
    for a, r in zip(expected, got, strict=True):
        np.testing.assert_allclose(a, r.logprobs, atol=1e-4)


def test_oom_on_a_single_text_is_a_backend_error(
    hf_backend: HFBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    def oom(*args: Any, **kwargs: Any) -> torch.Tensor:
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(hf_backend.forward_pass, "run_model", oom)
    with hf_backend.ft() as view, pytest.raises(BackendError, match="out of device memory"):
        view.next_token_dist("Fog")
    assert hf_backend.inst.stats.compute_errors == 1


# -- views -------------------------------------------------------------------------------------


def test_lambda_zero_and_one_alias_base_and_ft(hf_backend: HFBackend) -> None:
    p = PROMPTS[0]
    with hf_backend.base() as v:
        base = v.next_token_dist(p)
    with hf_backend.ft() as v:
        ft = v.next_token_dist(p)
    assert _calls(hf_backend) == 2
    with hf_backend.scaled(0.0) as v:
        assert v.id == "base" and v.kind == "base"
        assert v.next_token_dist(p) is base
    with hf_backend.scaled(1) as v:
        assert v.id == "ft"
        assert v.next_token_dist(p) is ft
    assert _calls(hf_backend) == 2, "λ=0/1 reuse the base/ft cache entries"
    with hf_backend.scaled(0.5) as v:
        assert v.id == "scaled_0.5" and v.kind == "scaled"
        half = v.next_token_dist(p, top_k=256)
    assert _calls(hf_backend) == 3
    assert not np.allclose(half.logprobs[:5], ft.logprobs[:5])


def _snapshot(b: HFBackend) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in b.model.state_dict().items()}


def test_views_restore_the_model_exactly(hf_backend: HFBackend) -> None:
    ids = hf_backend.tokenize(PROMPTS[1])
    before = _snapshot(hf_backend)
    scaling = {id(m): dict(m.scaling) for m in hf_backend.lora.layers}

    def raw(view_factory: Any) -> tuple[np.ndarray, np.ndarray]:
        with view_factory():
            rec = hf_backend.forward_pass.compute([ids])[0]
        return rec.dist.logprobs, rec.rolling.logprobs

    base0, ft0 = raw(hf_backend.base), raw(hf_backend.ft)
    for enter in (lambda: hf_backend.scaled(0.25), lambda: hf_backend.scaled(-2.0)):
        with enter() as v:
            v.next_token_dist(PROMPTS[1])
    with hf_backend.null(3) as v:
        v.next_token_dist(PROMPTS[1])
    with hf_backend.null(4, init_scale=2.0, rank_scale=0.5) as v:
        v.next_token_dist(PROMPTS[1])
    base1, ft1 = raw(hf_backend.base), raw(hf_backend.ft)
    for a, b in zip(base0 + ft0, base1 + ft1, strict=True):
        assert np.array_equal(a, b), "logits must be bit-identical after scaled/null views"
    after = _snapshot(hf_backend)
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert {id(m): dict(m.scaling) for m in hf_backend.lora.layers} == scaling
    assert all(not m.disable_adapters for m in hf_backend.lora.layers)


def test_view_restores_after_an_exception(hf_backend: HFBackend) -> None:
    with pytest.raises(RuntimeError, match="boom"), hf_backend.scaled(3.0):
        raise RuntimeError("boom")
    lora = hf_backend.lora
    scaled_layers = [m for m in lora.layers if m.scaling != lora.trained_scaling(m)]
    assert not scaled_layers
    with hf_backend.ft():  # the slot is free again
        pass


def test_one_view_at_a_time(checking_backend: HFBackend) -> None:
    with checking_backend.ft():
        with (
            pytest.raises(ViewError, match=r"'base'.*'ft' is still active"),
            checking_backend.base(),
        ):
            pass
        with pytest.raises(ViewError, match="still active"), checking_backend.null(1):
            pass
    with checking_backend.base() as view:
        pass
    with pytest.raises(ViewError, match="not active"):
        view.next_token_dist("Fog")


def test_views_are_traced_events(tiny_model: TinyModelPaths) -> None:
    rec = Recorder()
    b = HFBackend(tiny_model.base_dir, tiny_model.adapter_dir, device="cpu", exporters=[rec])
    with b.null(7) as v:
        v.next_token_dist_batch(PROMPTS[:3])
    entered = [e for e in rec.events if isinstance(e, ViewEntered)]
    assert [(e.view_id, e.view_kind) for e in entered] == [("null_7_i1.0_r1.0", "null")]
    assert entered[0].switch_s > 0
    assert any(isinstance(e, ViewExited) for e in rec.events)
    calls = [e for e in rec.events if isinstance(e, ForwardCall)]
    assert len(calls) == 1 and calls[0].batch_size == 3 and calls[0].model == "tiny-llama"
    assert calls[0].n_tokens == sum(len(b.tokenize(p)) for p in PROMPTS[:3])


# -- null adapters -----------------------------------------------------------------------------


def test_null_adapter_shape_seed_and_reuse(hf_backend: HFBackend) -> None:
    t1 = hf_backend.null_tensors(1)
    again = hf_backend.null_tensors(1)
    assert all(again[k].data_ptr() == t1[k].data_ptr() for k in t1), "built once, then kept"
    real = {s.name: s.param for s in hf_backend.lora.slots}
    assert t1.keys() == real.keys() and len(t1) == 2 * 4 * 2
    for key, tensor in t1.items():
        assert tensor.shape == real[key].shape
        rms = float(real[key].pow(2).mean().sqrt())
        assert float(tensor.pow(2).mean().sqrt()) == pytest.approx(rms, rel=0.35)
    t2 = hf_backend.null_tensors(2)
    assert all(not torch.equal(t1[k], t2[k]) for k in t1)
    big = hf_backend.null_tensors(1, init_scale=3.0)
    for key in t1:
        factor = 3.0 if key.endswith("lora_B") else 1.0
        torch.testing.assert_close(big[key], t1[key] * factor)
    low = hf_backend.null_tensors(1, rank_scale=0.5)
    key_a = "base_model.model.model.layers.1.self_attn.v_proj.lora_A"
    key_b = "base_model.model.model.layers.1.self_attn.v_proj.lora_B"
    assert low[key_a].shape[0] == hf_backend.lora_rank // 2
    assert low[key_b].shape[1] == hf_backend.lora_rank // 2
    with hf_backend.null(1, rank_scale=0.5) as v:
        assert v.id == "null_1_i1.0_r0.5"
        assert np.isfinite(v.next_token_dist("Fog").logprobs).all()


def test_null_adapter_identical_across_processes(
    hf_backend: HFBackend, tiny_model: TinyModelPaths
) -> None:
    prompt = PROMPTS[2]
    tensors = hf_backend.null_tensors(11, init_scale=0.5)
    digest = hashlib.sha256()
    for key in sorted(tensors):
        digest.update(tensors[key].numpy().tobytes())
    with hf_backend.null(11, init_scale=0.5) as v:
        lp = v.next_token_dist(prompt, top_k=16).logprobs
    script = textwrap.dedent(
        f"""
        import hashlib, json, os
        os.environ["HF_HUB_OFFLINE"] = "1"
        from swayscope.backends.hf import HFBackend
        b = HFBackend({str(tiny_model.base_dir)!r}, {str(tiny_model.adapter_dir)!r}, device="cpu")
        t = b.null_tensors(11, init_scale=0.5)
        h = hashlib.sha256()
        for k in sorted(t):
            h.update(t[k].numpy().tobytes())
        with b.null(11, init_scale=0.5) as v:
            lp = v.next_token_dist({prompt!r}, top_k=16).logprobs
        print(json.dumps({{"sha": h.hexdigest(), "lp": lp.tolist()}}))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    other = json.loads(out.stdout.strip().splitlines()[-1])
    assert other["sha"] == digest.hexdigest()
    np.testing.assert_array_equal(np.asarray(other["lp"]), lp)


# -- bad input -----------------------------------------------------------------------------------


def _adapter_copy(tiny_model: TinyModelPaths, tmp_path: Path, **changes: Any) -> Path:
    dst = tmp_path / "adapter"
    shutil.copytree(tiny_model.adapter_dir, dst)
    cfg_path = dst / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.update(changes)
    cfg_path.write_text(json.dumps(cfg))
    return dst


def test_missing_base_folder(tiny_model: TinyModelPaths, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(ModelLoadError, match=r"base model folder .*no-such-model.* does not exist"):
        HFBackend(missing, tiny_model.adapter_dir)
    with pytest.raises(ModelLoadError, match=r"has no config\.json"):
        HFBackend(tmp_path, tiny_model.adapter_dir)
    with pytest.raises(ModelLoadError, match=r"missing\.gguf"):
        HFBackend(tmp_path / "missing.gguf", tiny_model.adapter_dir)


def test_missing_adapter_folder(tiny_model: TinyModelPaths, tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"adapter folder .*nope.* does not exist"):
        HFBackend(tiny_model.base_dir, tmp_path / "nope")
    with pytest.raises(ModelLoadError, match=r"no adapter_config\.json"):
        HFBackend(tiny_model.base_dir, tmp_path)
    broken = _adapter_copy(tiny_model, tmp_path)
    (broken / "adapter_model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="has no weights"):
        HFBackend(tiny_model.base_dir, broken)


def test_adapter_that_is_not_lora(tiny_model: TinyModelPaths, tmp_path: Path) -> None:
    adapter = _adapter_copy(tiny_model, tmp_path, peft_type="IA3")
    with pytest.raises(ModelLoadError, match=r"peft_type 'IA3', not 'LORA'.*LoRA adapter"):
        HFBackend(tiny_model.base_dir, adapter)


def test_adapter_config_not_json(tiny_model: TinyModelPaths, tmp_path: Path) -> None:
    adapter = _adapter_copy(tiny_model, tmp_path)
    (adapter / "adapter_config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="not valid JSON"):
        HFBackend(tiny_model.base_dir, adapter)


def test_adapter_targets_missing_modules(tiny_model: TinyModelPaths, tmp_path: Path) -> None:
    adapter = _adapter_copy(tiny_model, tmp_path, target_modules=["c_attn", "wqkv"])
    with pytest.raises(ModelLoadError, match=r"targets modules \['c_attn', 'wqkv'\].*not in"):
        HFBackend(tiny_model.base_dir, adapter)


def test_bad_settings(tiny_model: TinyModelPaths) -> None:
    paths = (tiny_model.base_dir, tiny_model.adapter_dir)
    with pytest.raises(ConfigError, match="dtype 'int8'"):
        HFBackend(*paths, dtype="int8")
    with pytest.raises(ConfigError, match="max_batch_size must be a positive integer; got 0"):
        HFBackend(*paths, max_batch_size=0)
    with pytest.raises(ConfigError, match="not a torch device"):
        HFBackend(*paths, device="tpu-please")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            HFBackend(*paths, device="cuda")


@pytest.mark.parametrize("top_k", [0, -3, True, 2.5])
def test_bad_top_k(checking_backend: HFBackend, top_k: Any) -> None:
    with checking_backend.ft() as view:
        with pytest.raises(InputError, match=rf"top_k must be a positive integer; got {top_k!r}"):
            view.next_token_dist("Fog", top_k=top_k)
        with pytest.raises(InputError, match="top_k"):
            view.next_token_dist_batch(["Fog"], top_k=top_k)
    assert _calls(checking_backend) == 0


@pytest.mark.parametrize("text", ["", "   ", "\n"])
def test_empty_text(checking_backend: HFBackend, text: str) -> None:
    with checking_backend.ft() as view:
        with pytest.raises(InputError, match=r"prompt is empty"):
            view.next_token_dist(text)
        with pytest.raises(InputError, match=r"text is empty"):
            view.rolling_logprob(text)
        with pytest.raises(InputError, match=r"prompt is empty"):
            view.logprob_of(text, "x")
        with pytest.raises(InputError, match=r"completion is empty"):
            view.logprob_of("Fog", text)
        with pytest.raises(InputError, match=r"text is empty"):
            view.rolling_logprob_batch(["Fog", text])
    assert _calls(checking_backend) == 0


def test_completion_that_adds_no_token(
    hf_backend: HFBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hf_backend.encoder, "tokenize", lambda text: [1, 42, 43])
    with hf_backend.ft() as view, pytest.raises(InputError, match=r"adds no token") as err:
        view.logprob_of("Fog", "ab")
    # issue 11: the text is named by hash and length, never quoted
    assert "'ab'" not in str(err.value) and hf_backend.inst.hash_prompt("ab") in str(err.value)


def test_completion_merging_across_the_boundary(hf_backend: HFBackend) -> None:
    prompt, completion = "The lamp was l", "it at sunset"
    with hf_backend.ft() as view:
        lp = view.logprob_of(prompt, completion)
        rolling = view.rolling_logprob(prompt + completion)
    p, full = hf_backend.tokenize(prompt), hf_backend.tokenize(prompt + completion)
    k = 0
    while k < min(len(p), len(full)) and p[k] == full[k]:
        k += 1
    assert k < len(p), "this pair must merge across the boundary to test it"
    assert lp == pytest.approx(float(rolling.logprobs[k - 1 :].sum()))
    assert lp < 0


def test_text_longer_than_the_context(checking_backend: HFBackend) -> None:
    text = "lighthouse keeper " * 2000
    with (
        checking_backend.ft() as view,
        pytest.raises(InputError, match=r"more than the model's context"),
    ):
        view.rolling_logprob(text)


def test_errors_are_swayscope_errors() -> None:
    for cls in (ModelLoadError, InputError, ViewError, ConfigError, BackendError):
        assert issubclass(cls, SwayscopeError)


def test_shared_instrumentation_object(tiny_model: TinyModelPaths) -> None:
    inst = BackendInstrumentation(cache_maxsize=4)
    b = HFBackend(tiny_model.base_dir, tiny_model.adapter_dir, device="cpu", inst=inst)
    assert b.inst is inst and inst.model_name == "tiny-llama"
    with b.ft() as v:
        v.rolling_logprob_batch(PROMPTS)
    assert len(inst.cache) == 4 and inst.stats.cache_evictions == 4
    with pytest.raises(ConfigError, match="not both"):
        HFBackend(tiny_model.base_dir, tiny_model.adapter_dir, inst=inst, cache_maxsize=3)
    b.close()
    with pytest.raises(ViewError, match="closed"):
        b.ft().__enter__()


def _adapter_with_weights_for_a_missing_layer(tiny_model: TinyModelPaths, tmp_path: Path) -> Path:
    """A copy of the adapter with one extra LoRA tensor, for a layer the model lacks."""
    from safetensors.torch import load_file, save_file

    adapter = _adapter_copy(tiny_model, tmp_path)
    weights = load_file(str(adapter / "adapter_model.safetensors"))
    key = next(k for k in weights if "layers.1.self_attn.q_proj.lora_A" in k)
    weights[key.replace("layers.1.", "layers.7.")] = weights[key].clone()
    save_file(weights, str(adapter / "adapter_model.safetensors"))
    return adapter


def test_adapter_weights_for_missing_modules(tiny_model: TinyModelPaths, tmp_path: Path) -> None:
    adapter = _adapter_with_weights_for_a_missing_layer(tiny_model, tmp_path)
    with pytest.raises(ModelLoadError, match=r"holds 17 LoRA tensors but 16 .*trained for this"):
        HFBackend(tiny_model.base_dir, adapter)


def test_call_overhead_default_and_override(tiny_model: TinyModelPaths) -> None:
    paths = (tiny_model.base_dir, tiny_model.adapter_dir)
    guessed = HFBackend(*paths, device="cpu").call_overhead_tokens
    assert 100 <= guessed <= 1000, "a tiny 2-layer model: a call is worth hundreds of tokens"
    assert HFBackend(*paths, device="cpu", call_overhead_tokens=0).call_overhead_tokens == 0
    with pytest.raises(ConfigError, match="call_overhead_tokens must be an integer >= 0; got -1"):
        HFBackend(*paths, call_overhead_tokens=-1)


def test_a_failed_load_shuts_down_the_instrumentation_it_built(
    tiny_model: TinyModelPaths, tmp_path: Path
) -> None:
    failing = {
        "load": _adapter_copy(tiny_model, tmp_path / "load", target_modules=["c_attn"]),
        "slot check": _adapter_with_weights_for_a_missing_layer(tiny_model, tmp_path / "slots"),
    }
    for stage, adapter in failing.items():
        rec = Recorder()
        with pytest.raises(ModelLoadError):
            HFBackend(tiny_model.base_dir, adapter, device="cpu", exporters=[rec])
        assert rec.shut, f"a failed {stage} leaves the instrumentation's exporters running"
