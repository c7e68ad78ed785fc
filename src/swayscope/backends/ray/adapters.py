"""A sweep's adapters on one pool: each adapter's run computes on the worker holding it.

A checkpoint sweep on a pool starts one :class:`~.backend.RayBackend` (every worker
loads the base model once) and then gives each worker one adapter at a time
(:meth:`PoolAdapter.attach`: peft's ``delete_adapter``/``load_adapter`` on the worker,
its previous adapter put back when the new one does not attach). The adapter's run sees
a backend of its own, :class:`PoolAdapter`, whose views compute through a
:class:`~.pool.Lane` to that worker, so several adapters' runs compute side by side,
one per worker, through the driver's one cache: the base view's entries are keyed by
the base alone, so whichever run asks first computes them and every other run is served
from the cache; every other view is keyed by its adapter's content.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from swayscope.backends.hf.generate import GenerationSource
from swayscope.backends.hf.loading import (
    adapter_content_hash,
    check_adapter,
    fingerprint_models,
    load_tokenizer,
    model_identity,
)
from swayscope.backends.hf.records import RecordSource
from swayscope.backends.hf.tokenizer import TextEncoder
from swayscope.backends.hf.view_state import TRAINED, ViewState
from swayscope.backends.hf.views import ViewOpeners, ViewSlot
from swayscope.backends.ray.backend import RayBackend
from swayscope.backends.ray.messages import AdapterRef
from swayscope.backends.ray.pool import Lane
from swayscope.errors import AdapterLoadError


def lane_encoder(owner: RayBackend) -> TextEncoder:
    """A tokenizer of the pool's base for one thread of runs (a tokenizer is not shared
    between threads that tokenize at the same time)."""
    return TextEncoder(
        load_tokenizer(owner.base_path, owner.gguf_file),
        owner.context_length,
        lambda text: f"(prompt hash {owner.inst.hash_prompt(text)}, {len(text)} characters)",
    )


class PoolAdapter(ViewOpeners):
    """One adapter of a sweep, held by one worker of a shared pool, seen through the usual
    views; build it with :meth:`attach`. Its instrumentation, and the pool, are the
    sweep's: :meth:`close` ends only this adapter's views."""

    def __init__(
        self,
        owner: RayBackend,
        lane: Lane,
        encoder: TextEncoder,
        adapter_path: Path,
        adapter_hash: str,
        *,
        name: str,
        lora_rank: int,
    ) -> None:
        self.inst = owner.inst
        self.owner = owner
        self.lane = lane
        self.encoder = encoder
        self.adapter_path = adapter_path
        self.adapter_hash = adapter_hash
        self.lora_rank = lora_rank
        self.threads = owner.threads
        self._adapter_name = name
        self.model_id = model_identity(
            owner.base_path, owner.gguf_file, owner.dtype, adapter_hash
        )
        # Its own views' entries may go to the disk cache (keyed by this adapter's content).
        fingerprint_models(
            self.inst, owner.base_id, self.model_id, owner.base_path, owner.gguf_file,
            owner.dtype, owner.device, adapter_hash,
        )
        # One worker's batch per call: the calls go to one worker (as one process plans).
        source = RecordSource(
            self.inst, encoder, lane, owner.limits, key_model=self._key_model, propagate=True
        )
        generations = GenerationSource(
            self.inst, encoder, lane, owner.limits, key_model=self._key_model, propagate=True
        )
        self._views = ViewSlot(
            self.inst, source, generations, restore=lambda: lane.set_view(TRAINED)
        )

    @classmethod
    def attach(
        cls,
        owner: RayBackend,
        worker: int,
        adapter_path: Path | str,
        *,
        name: str | None = None,
        stop: threading.Event | None = None,
        encoder: TextEncoder | None = None,
    ) -> tuple[PoolAdapter, float]:
        """Give ``worker`` of ``owner``'s pool the adapter in ``adapter_path`` (the base stays
        loaded) and return its backend and the seconds the swap took.

        ``name``: what runs report as the adapter (default: the folder's name); ``stop``:
        set, the adapter's calls raise :class:`KeyboardInterrupt`; ``encoder``: the
        tokenizer its thread uses (default: a new one). When the worker cannot attach it,
        :class:`~swayscope.errors.AdapterLoadError` says why and the worker's previous
        adapter is back in place.
        """
        path, _ = check_adapter(Path(adapter_path).expanduser())
        ref = AdapterRef(str(path), adapter_content_hash(path))
        stop = stop or threading.Event()
        reply = owner.pool.attach(worker, ref, stop)
        if reply.error is not None:
            raise AdapterLoadError(f"worker {worker} (pid {reply.pid}): {reply.error}")
        lane = Lane(owner.pool, adapter=ref, home=worker, stop=stop)
        backend = cls(
            owner, lane, encoder or lane_encoder(owner), path, ref.content,
            name=name or path.name, lora_rank=reply.lora_rank,
        )
        return backend, reply.load_s

    def _key_model(self, view_id: str) -> str:
        """The base view's entries name the base only (every adapter shares them); the
        others name this adapter's content."""
        return self.owner.base_id if view_id == "base" else self.model_id

    # -- identity and settings ------------------------------------------------------------

    @property
    def model_name(self) -> str:
        return self.owner.model_name

    @property
    def adapter_name(self) -> str:
        return self._adapter_name

    @property
    def context_length(self) -> int | None:
        return self.encoder.context_length

    @property
    def max_top_k(self) -> int:
        return self.owner.max_top_k

    @property
    def home(self) -> int | None:
        """The worker holding this adapter."""
        return self.lane.home

    @property
    def workers(self) -> dict[str, Any]:
        """The pool as this adapter's result reports it (see ``RayBackend.workers``), and the
        worker that held the adapter."""
        return {**self.owner.workers, "home": str(self.lane.home)}

    def tokenize(self, text: str) -> list[int]:
        return self.encoder.tokenize(text)

    def token_prefix(self, text: str, n_tokens: int) -> str:
        return self.encoder.token_prefix(text, n_tokens)

    # -- views and lifecycle --------------------------------------------------------------

    def _set_view(self, state: ViewState) -> None:
        self.lane.set_view(state)

    def close(self) -> None:
        """Refuse every later view; the pool and the instrumentation stay (the sweep's)."""
        self._views.close()


__all__ = ["PoolAdapter", "lane_encoder"]
