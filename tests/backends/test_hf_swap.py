"""HFBackend.swap_adapter: another adapter on the same loaded base, exactly as if loaded
fresh; base-view cache entries shared, every other view keyed by the adapter."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

pytest.importorskip("torch")

from swayscope.backends.api import AdapterSwapping
from swayscope.backends.hf import HFBackend
from swayscope.errors import AdapterLoadError, ViewError

if TYPE_CHECKING:
    from swayscope.backends.tiny import TinyModelPaths

PROMPTS = ["The lamp was lit at sunset", "Fog rolled over the rocks", "The keeper wrote"]


@pytest.fixture(scope="module")
def other_adapter(tiny_model: TinyModelPaths, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny adapter at twice its LoRA scale (lora_alpha 32): same shape, other effect."""
    other = tmp_path_factory.mktemp("other") / "other-lora"
    shutil.copytree(tiny_model.adapter_dir, other)
    cfg_path = other / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["lora_alpha"] = 32
    cfg_path.write_text(json.dumps(cfg))
    return other


def dists(backend: HFBackend, view: str) -> list[np.ndarray]:
    with getattr(backend, view)() as v:
        return [d.logprobs.copy() for d in v.next_token_dist_batch(PROMPTS, top_k=16)]


def same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_a_swapped_adapter_scores_exactly_like_a_fresh_load(
    hf_backend: HFBackend, tiny_model: TinyModelPaths, other_adapter: Path
) -> None:
    assert isinstance(hf_backend, AdapterSwapping)
    ft_before = dists(hf_backend, "ft")
    base = dists(hf_backend, "base")
    base_calls = hf_backend.inst.stats.base_forward_calls
    hf_backend.swap_adapter(other_adapter, name="alpha-32")
    assert hf_backend.adapter_name == "alpha-32"
    assert hf_backend.adapter_path == other_adapter
    swapped = dists(hf_backend, "ft")
    with hf_backend.null(0) as v:
        null_swapped = v.next_token_dist(PROMPTS[0], top_k=16).logprobs.copy()
    fresh = HFBackend(tiny_model.base_dir, other_adapter, device="cpu")
    try:
        assert same(swapped, dists(fresh, "ft"))
        with fresh.null(0) as v:  # null adapters follow the new adapter's size
            assert np.array_equal(null_swapped, v.next_token_dist(PROMPTS[0], top_k=16).logprobs)
        assert hf_backend.inst.model_id == fresh.inst.model_id
    finally:
        fresh.close()
    assert not same(swapped, ft_before)
    # The base view's entries are shared: no new base forward call after the swap.
    assert same(dists(hf_backend, "base"), base)
    assert hf_backend.inst.stats.base_forward_calls == base_calls
    # Back to the first adapter: its ft entries are found again under its own key.
    calls = hf_backend.inst.stats.forward_calls
    hf_backend.swap_adapter(tiny_model.adapter_dir)
    assert hf_backend.adapter_name == tiny_model.adapter_dir.name
    assert same(dists(hf_backend, "ft"), ft_before)
    assert hf_backend.inst.stats.forward_calls == calls


def test_an_adapter_that_cannot_be_loaded_leaves_the_previous_one_in_place(
    hf_backend: HFBackend, tiny_model: TinyModelPaths, tmp_path: Path
) -> None:
    ft = dists(hf_backend, "ft")
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model.adapter_dir, broken)
    (broken / "adapter_model.safetensors").write_bytes(b"garbage")
    with pytest.raises(AdapterLoadError, match=r"cannot attach adapter .*broken"):
        hf_backend.swap_adapter(broken)
    with pytest.raises(AdapterLoadError, match=r"has no adapter_config\.json"):
        hf_backend.swap_adapter(tmp_path)
    assert hf_backend.adapter_name == tiny_model.adapter_dir.name
    hf_backend.inst.cache.clear()
    assert same(dists(hf_backend, "ft"), ft)  # recomputed with the adapter put back
    with hf_backend.scaled(0.5) as v:
        v.next_token_dist(PROMPTS[0], top_k=16)


def test_no_swap_inside_a_view(hf_backend: HFBackend, other_adapter: Path) -> None:
    with hf_backend.ft(), pytest.raises(ViewError, match="cannot swap the adapter while view"):
        hf_backend.swap_adapter(other_adapter)


def test_prefixes_stored_under_the_previous_adapter_are_not_reused(
    tiny_model: TinyModelPaths, other_adapter: Path
) -> None:
    from swayscope.probes.defaults import NEUTRAL_CONTEXT

    b = HFBackend(tiny_model.base_dir, tiny_model.adapter_dir, device="cpu",
                  call_overhead_tokens=0)
    fresh = HFBackend(tiny_model.base_dir, other_adapter, device="cpu", prefix_cache_max_bytes=0)
    try:
        assert b.forward_pass.prefix_reuse
        context = b.token_prefix(NEUTRAL_CONTEXT, 60)
        texts = [f"{context}\n\n{p}" for p in PROMPTS]
        with b.ft() as v:
            v.next_token_dist_batch(texts)  # the context's keys and values are stored
        b.swap_adapter(other_adapter)
        later = [f"{t} again" for t in texts]  # new texts that start with the context
        with b.ft() as v:
            got = [d.logprobs for d in v.next_token_dist_batch(later, top_k=16)]
        with fresh.ft() as v:
            want = [d.logprobs for d in v.next_token_dist_batch(later, top_k=16)]
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose(g, w, atol=1e-4)
    finally:
        b.close()
        fresh.close()
