"""The key/value cache one model call runs on: each row's prefix in, only what is kept out.

A model call that continues texts from shared prefixes hands the model a cache
holding those prefixes' keys and values. transformers' ``DynamicCache`` would
also keep every layer's new keys and values (all rows, prefix included) until
the call ends; :class:`CallCache` keeps, per layer, only the rows that build a
new prefix, so a call over many texts on one long prefix holds one layer's
worth of their keys and values at a time instead of all of them.

It is a transformers ``Cache`` of one :class:`KeepRowsLayer` per layer, built on
``CacheLayerMixin``, transformers' public base class of a layer's cache: the layer
keeps its own state and writes nothing of transformers' classes. With a
transformers that has no per-layer caches it falls back to a ``DynamicCache``
filled through its public ``update``.

The layer relies on how a model uses its cache: it sizes the attention mask from
``get_mask_sizes`` before the layers run, then calls ``update`` once per layer with
that layer's new keys and values and attends over what it returns. The forward
pass's start-up self-check guards this (where a model does otherwise, its answers
disagree and shared-prefix reuse turns off, with a warning);
:data:`VERIFIED_TRANSFORMERS` is the range of transformers versions it was
checked on, and a test fails outside it.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import torch

#: Keys and values of one layer.
KV = tuple[torch.Tensor, torch.Tensor]

#: transformers versions (from, up to but not including) :class:`KeepRowsLayer` was
#: checked on: the per-layer cache API of the 5.x series (checked on 5.25).
VERIFIED_TRANSFORMERS = ((5, 25), (6, 0))


def new_cache(config: Any) -> Any:
    """An empty ``DynamicCache`` for ``config``'s layers."""
    from transformers import DynamicCache

    try:
        return DynamicCache(config=config)
    except TypeError:  # transformers before the per-layer cache
        return DynamicCache()


def cache_layers(dynamic_cache: Any) -> list[KV]:
    """Keys and values per layer of a ``DynamicCache``, each ``[B, heads, positions, dim]``."""
    return [(item[0], item[1]) for item in dynamic_cache]


@cache
def keep_rows_layer() -> type[Any] | None:
    """:class:`KeepRowsLayer` when this transformers has per-layer caches (``Cache`` built
    from a list of ``CacheLayerMixin`` layers), else None."""
    try:
        from transformers.cache_utils import CacheLayerMixin
    except ImportError:
        return None
    base: Any = CacheLayerMixin

    class KeepRowsLayer(base):  # type: ignore[misc]
        """One layer of a call's cache: starts from given keys and values (a prefix per
        row, or none) and keeps only the chosen rows of what the model adds."""

        is_sliding = False

        def __init__(self, past: KV | None, keep: list[int]) -> None:
            super().__init__()
            self.past = past
            self.keep = keep
            self.kept: KV | None = None

        def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
            """Nothing to set up: the layer holds its prefix from the start."""

        def update(
            self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
        ) -> KV:
            if self.past is not None:
                keys = torch.cat([self.past[0], key_states], dim=-2)
                values = torch.cat([self.past[1], value_states], dim=-2)
            else:
                keys, values = key_states, value_states
            if self.keep:
                self.kept = (keys[self.keep], values[self.keep])
            return keys, values

        def get_seq_length(self) -> int:
            return int(self.past[0].shape[-2]) if self.past is not None else 0

        def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
            return self.get_seq_length() + query_length, 0

        def get_max_length(self) -> int:
            return -1

    return KeepRowsLayer


class CallCache:
    """The cache of one model call.

    Args:
        config: the model's config.
        past: per layer, each row's prefix keys and values ``[B, heads, P, dim]`` (None:
            no prefix).
        keep: the rows whose keys and values (prefix and new) :meth:`kept` returns.
    """

    def __init__(self, config: Any, past: list[KV] | None, keep: list[int]) -> None:
        self.keep = keep
        layer_class = keep_rows_layer()
        if layer_class is not None:
            from transformers import Cache

            text = config.get_text_config() if hasattr(config, "get_text_config") else config
            pasts: list[KV | None] = (
                list(past) if past is not None else [None] * int(text.num_hidden_layers)
            )
            self._layers: list[Any] | None = [layer_class(p, keep) for p in pasts]
            self.cache: Any = Cache(layers=self._layers)
        else:
            self._layers = None
            self.cache = new_cache(config)
            for i, (k, v) in enumerate(past or []):
                self.cache.update(k, v, i)

    def kept(self) -> list[KV]:
        """Per layer, the kept rows' keys and values: ``[kept, heads, P + S, dim]``."""
        if self._layers is not None:
            out: list[KV] = []
            for layer in self._layers:
                assert layer.kept is not None, "the model did not use the cache"
                out.append(layer.kept)
            return out
        return [(k[self.keep], v[self.keep]) for k, v in cache_layers(self.cache)]


__all__ = [
    "KV",
    "VERIFIED_TRANSFORMERS",
    "CallCache",
    "cache_layers",
    "keep_rows_layer",
    "new_cache",
]
