"""What a model allows: packed head, shared prefixes, its cache keyword; out-of-memory."""

from __future__ import annotations

import inspect
from typing import Any

import torch


def is_oom(exc: BaseException) -> bool:
    """Whether ``exc`` says the device (or host) ran out of memory."""
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    msg = str(exc)
    return isinstance(exc, RuntimeError) and (
        "out of memory" in msg or "can't allocate memory" in msg
    )


def packed_head_parts(model: Any) -> tuple[torch.nn.Module, torch.nn.Module] | None:
    """The decoder body and output head of a PEFT model over the usual ``*ForCausalLM``."""
    base = model.get_base_model()
    body = getattr(base, getattr(base, "base_model_prefix", ""), None)
    head = base.get_output_embeddings()
    if not isinstance(body, torch.nn.Module) or not isinstance(head, torch.nn.Module):
        return None
    return body, head


def model_label(model: Any) -> str:
    """How messages name a (PEFT) model: the folder it was loaded from and its type."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    name = getattr(base, "name_or_path", None) or type(base).__name__
    kind = getattr(getattr(base, "config", None), "model_type", None)
    return f"{name!r} ({kind})" if kind else repr(name)


def full_attention_only(config: Any) -> bool:
    """Whether every layer attends to every earlier position (no sliding window, no
    recurrent state): only then are a prefix's keys and values all a suffix needs."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    types = getattr(text, "layer_types", None)
    if types is not None and any(t != "full_attention" for t in types):
        return False
    window = getattr(text, "sliding_window", None)
    return window is None or getattr(text, "use_sliding_window", True) is False


def cache_keyword(model: Any) -> str:
    """The keyword a causal LM takes its key/value cache under (``cache`` since
    transformers 5.24, ``past_key_values`` before)."""
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return "past_key_values"
    return "cache" if "cache" in params else "past_key_values"


__all__ = [
    "cache_keyword",
    "full_attention_only",
    "is_oom",
    "model_label",
    "packed_head_parts",
]
