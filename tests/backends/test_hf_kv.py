"""The call's key/value cache: built from transformers' public cache classes, pinned to the
transformers versions it was checked on, and the plain ``DynamicCache`` fallback scoring as
the plain computation does."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

import torch
import transformers
from reference_scoring import TEXTS, References, check_rolling, view_cases

from swayscope.backends.hf import kv

if TYPE_CHECKING:
    from swayscope.backends.tiny import TinyModelPaths


def test_the_installed_transformers_is_one_the_call_cache_was_checked_on() -> None:
    """``KeepRowsLayer`` relies on how models call a cache (mask sizes first, then one
    ``update`` per layer); the start-up self-check guards it at run time, this pins the
    versions it was checked on, so an upgrade past them is checked before it ships."""
    found = re.match(r"(\d+)\.(\d+)", transformers.__version__)
    assert found is not None, transformers.__version__
    version = (int(found[1]), int(found[2]))
    low, high = kv.VERIFIED_TRANSFORMERS
    assert low <= version < high, (
        f"transformers {transformers.__version__} is outside {low} .. {high} (exclusive), the "
        "versions swayscope.backends.hf.kv.KeepRowsLayer was checked on: run the reference "
        "and self-check tests on it, read its cache_utils, then widen VERIFIED_TRANSFORMERS"
    )


def test_the_call_cache_is_built_from_transformers_public_cache_classes() -> None:
    layer_class = kv.keep_rows_layer()
    assert layer_class is not None
    assert issubclass(layer_class, transformers.CacheLayerMixin)  # exported: public
    assert not issubclass(layer_class, transformers.DynamicLayer)  # no state of theirs set
    keys = torch.zeros((2, 1, 3, 4))
    config = transformers.LlamaConfig(num_hidden_layers=2)
    call = kv.CallCache(config, [(keys, keys), (keys, keys)], keep=[1])
    assert isinstance(call.cache, transformers.Cache)
    assert call.cache.get_seq_length() == 3
    assert call.cache.get_mask_sizes(5, 0) == (8, 0)
    new = torch.ones((2, 1, 5, 4))
    out_keys, _ = call.cache.update(new, new, 0)
    assert out_keys.shape == (2, 1, 8, 4)
    assert call.cache.layers[0].kept[0].shape == (1, 1, 8, 4)  # only the kept row


def test_the_dynamic_cache_fallback_scores_as_the_plain_computation(
    tiny_model: TinyModelPaths, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where transformers has no per-layer caches, a ``DynamicCache`` filled through its
    public ``update`` carries the prefixes: the self-check passes on it and shared prefixes
    score as the plain computation."""
    from swayscope.backends.hf import HFBackend

    monkeypatch.setattr(kv, "keep_rows_layer", lambda: None)
    backend = HFBackend(
        tiny_model.base_dir, tiny_model.adapter_dir, device="cpu", call_overhead_tokens=0
    )
    try:
        assert backend.forward_pass.prefix_reuse
        case = next(c for c in view_cases() if c.name == "ft")
        plain = References(tiny_model.base_dir, tiny_model.adapter_dir).plain(case)
        with backend.ft() as view:
            rolls = view.rolling_logprob_batch(TEXTS)
        assert backend.inst.stats.prefix_hits > 0
        for text, roll in zip(TEXTS, rolls, strict=True):
            check_rolling(roll, plain, text, f"fallback rolling_logprob {text!r}")
    finally:
        backend.close()
