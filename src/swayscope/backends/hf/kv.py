"""The key/value cache one model call runs on: each row's prefix in, only what is kept out.

A model call that continues texts from shared prefixes hands the model a cache
holding those prefixes' keys and values. transformers' ``DynamicCache`` would
also keep every layer's new keys and values (all rows, prefix included) until
the call ends; :class:`CallCache` keeps, per layer, only the rows that build a
new prefix, so a call over many texts on one long prefix holds one layer's
worth of their keys and values at a time instead of all of them. It is built
from transformers' public cache classes (``Cache`` with one ``DynamicLayer``
subclass per layer); with a transformers too old to have per-layer caches it
falls back to a plain ``DynamicCache``.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import torch

#: Keys and values of one layer.
KV = tuple[torch.Tensor, torch.Tensor]


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
def _keep_layer_class() -> type[Any] | None:
    """A ``DynamicLayer`` that starts from given keys/values and keeps only chosen rows of
    what the model adds (None: this transformers has no ``DynamicLayer``)."""
    try:
        from transformers.cache_utils import DynamicLayer
    except ImportError:
        return None
    base: Any = DynamicLayer

    class KeepRowsLayer(base):  # type: ignore[misc]
        def __init__(self, past: KV | None, keep: list[int]) -> None:
            super().__init__()
            self.keep = keep
            self.kept: KV | None = None
            self.past = past
            if past is not None:
                self.keys, self.values = past
                self.device = past[0].device
                self.is_initialized = True

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
        layer_class = _keep_layer_class()
        if layer_class is not None:
            from transformers.cache_utils import Cache

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


__all__ = ["KV", "CallCache", "cache_layers", "new_cache"]
