"""Transformers + PEFT differential backend: one base model, one LoRA adapter, many views.

The base model is loaded once and the LoRA adapter attached once (offline, local
folders only). Views never copy or rewrite the base weights:

- ``base`` — the LoRA layers are switched off (``scaled(0)`` *is* this view);
- ``ft`` — the adapter as trained (``scaled(1)`` *is* this view);
- ``scaled(λ)`` — every LoRA layer's ``scaling`` multiplied by λ; the saved
  floats are written back on exit, so restoration is exact;
- ``null(seed, init_scale, rank_scale)`` — a random LoRA of the adapter's shape,
  generated once per id, swapped in place of the adapter's ``lora_A``/``lora_B``
  parameters while the view is active; the adapter's own parameter objects are
  put back on exit.

Every scoring op goes through the instrumentation core and shares one cached
*forward record* per (view, text): the last position's top ``max_top_k``
distribution and, when an op needs it, the log-probability of every token.
``next_token_dist`` needs only the former, so its misses run the output head on
each text's last position only; ``rolling_logprob`` and ``logprob_of`` need the
latter and upgrade a record that lacks it. Misses are packed into forward calls
under a token budget and a batch-size cap, sorted by length, right-padded; texts
that share a token prefix compute it once per view (within a call and, through a
byte-bounded store, across calls) and run their own tokens on its keys and values;
an out-of-memory call is split in half and retried. Greedy generation (``generate``)
runs transformers' decoding loop over left-padded batches, cached per (view, prompt,
token limit, stop strings).

Modules, one concern each:

- :mod:`.loading` — settings, folder checks, loading the model and attaching the adapter;
- :mod:`.lora` — the adapter's LoRA layers and the switch that sets them per view;
- :mod:`.null_adapters` — random adapters of the adapter's shape;
- :mod:`.tokenizer` — text to token ids, input checks;
- :mod:`.planner` — how missed texts become forward calls;
- :mod:`.prefix` — which shared prefixes to compute once, and the store that keeps them;
- :mod:`.kv` — the key/value cache one model call runs on;
- :mod:`.forward` — :class:`ForwardRecord` and the batched forward pass;
- :mod:`.records` — the cached record lookups views score through;
- :mod:`.generate` — greedy generation and the cached lookups views generate through;
- :mod:`.views` — :class:`HFView` and the one-view-at-a-time slot;
- :mod:`.backend` — :class:`HFBackend`, composing them.
"""

from __future__ import annotations

try:
    import torch as _torch  # noqa: F401  (fail here, with the install hint)
except ImportError as _exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "swayscope.backends.hf needs torch, transformers and peft; "
        "install them with: pip install 'swayscope[hf]'"
    ) from _exc

from swayscope.backends.hf.backend import HFBackend
from swayscope.backends.hf.loading import adapter_content_hash
from swayscope.backends.hf.lora import ADAPTER
from swayscope.backends.hf.planner import plan_batches
from swayscope.backends.hf.records import FORWARD_OP
from swayscope.backends.hf.rows import ForwardRecord
from swayscope.backends.hf.views import HFView

__all__ = [
    "ADAPTER",
    "FORWARD_OP",
    "ForwardRecord",
    "HFBackend",
    "HFView",
    "adapter_content_hash",
    "plan_batches",
]
