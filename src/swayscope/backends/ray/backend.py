"""RayBackend: the driver of a pool of forward workers, seen through the usual views.

The driver keeps what makes the engine one engine: the instrumentation (the one
cache, the stats, the exporters), the tokenizer, the planner and the views. It holds
no model: each worker of its :class:`~.pool.WorkerPool` loads the base model and the
adapter, and only the cache's misses go to them. A call's texts are planned as in
one process, with a budget of one worker's batch per worker, then split across the
workers (:mod:`.split`). Views are values (:class:`~swayscope.backends.hf.view_state.ViewState`)
sent with each call, so a worker needs no state but its model, null adapters are built
on each worker from their seeds, and a restarted worker picks up the next call's view.
Greedy generation goes the same way: its misses are split across the workers, each
generating its part with its own model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from swayscope.backends.api import (
    DEFAULT_MAX_BATCH_SIZE,
    DEFAULT_MAX_BATCH_TOKENS,
    DEFAULT_MAX_NULL_ADAPTERS,
    DEFAULT_PREFIX_CACHE_BYTES,
    RESOURCE_UNIT,
)
from swayscope.backends.hf.generate import GenerationSource
from swayscope.backends.hf.loading import (
    adapter_content_hash,
    base_identity,
    check_adapter,
    check_base,
    fingerprint_models,
    load_tokenizer,
    model_identity,
    positive_int,
    resolve_dtype,
)
from swayscope.backends.hf.planner import BatchLimits
from swayscope.backends.hf.records import RecordSource
from swayscope.backends.hf.tokenizer import TextEncoder
from swayscope.backends.hf.view_state import TRAINED, ViewState
from swayscope.backends.hf.views import ViewOpeners, ViewSlot
from swayscope.backends.ray.cluster import LOCAL
from swayscope.backends.ray.messages import WorkerConfig
from swayscope.backends.ray.pool import WorkerPool
from swayscope.backends.threads import check_threads
from swayscope.errors import ConfigError
from swayscope.instrumentation import BackendInstrumentation
from swayscope.instrumentation.vocabulary import DEFAULT_TOP_K


class RayBackend(ViewOpeners):
    """A local base model and LoRA adapter, computed by a pool of Ray workers.

    Args:
        base_path, adapter_path, gguf_file, device, dtype, max_top_k, max_batch_tokens,
        max_batch_size, seed, model_name, adapter_name, max_null_adapters,
        call_overhead_tokens, prefix_cache_max_bytes: as for
            :class:`~swayscope.backends.hf.HFBackend`; the batch limits are per worker (a
            call plans one worker's batch per worker).
            The folders must exist on every node the workers run on, at these paths.
        workers: how many workers (each one copy of the model).
        cpus_per_worker: CPUs each worker reserves.
        gpus_per_worker: GPUs each worker reserves (``device`` "auto" then uses CUDA).
        address: ``local`` (a cluster started for this backend, stopped at close),
            ``auto``, ``host:port`` or ``ray://host:port``.
        threads: torch threads per worker; default: ``cpus_per_worker``, rounded up.
        inst: the instrumentation every lookup goes through (built from ``inst_kwargs``
            when omitted).
        sources: where each setting came from, for errors (keys: ``address``, ``count``,
            ``cpus``, ``gpus``, ``model``).
    """

    def __init__(
        self,
        base_path: Path | str,
        adapter_path: Path | str,
        *,
        workers: int = 2,
        cpus_per_worker: float = 1.0,
        gpus_per_worker: float = 0.0,
        address: str = LOCAL,
        device: str = "auto",
        dtype: str = "auto",
        max_top_k: int = DEFAULT_TOP_K,
        max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS,
        max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
        inst: BackendInstrumentation | None = None,
        seed: int = 0,
        gguf_file: str | None = None,
        model_name: str | None = None,
        adapter_name: str | None = None,
        max_null_adapters: int = DEFAULT_MAX_NULL_ADAPTERS,
        call_overhead_tokens: int | None = None,
        prefix_cache_max_bytes: int = DEFAULT_PREFIX_CACHE_BYTES,
        threads: int | None = None,
        sources: Mapping[str, str] | None = None,
        **inst_kwargs: Any,
    ) -> None:
        count = positive_int("workers", workers)
        for name, value in (("cpus_per_worker", cpus_per_worker),
                            ("gpus_per_worker", gpus_per_worker)):
            if isinstance(value, bool) or not isinstance(value, int | float) or not (
                value == 0 or RESOURCE_UNIT <= value < math.inf
            ):
                raise ConfigError(
                    f"{name} must be 0 or a finite number >= {RESOURCE_UNIT:g} (Ray counts "
                    f"resources in ten-thousandths); got {value!r}"
                )
        if not cpus_per_worker > 0:
            raise ConfigError(f"cpus_per_worker must be above 0; got {cpus_per_worker!r}")
        threads = check_threads(threads) or max(1, math.ceil(cpus_per_worker))
        self.base_path, self.gguf_file = check_base(Path(base_path).expanduser(), gguf_file)
        self.adapter_path, self.adapter_config = check_adapter(Path(adapter_path).expanduser())
        if inst is not None and inst_kwargs:
            raise ConfigError(
                f"pass either inst= or instrumentation keywords ({sorted(inst_kwargs)}), not both"
            )
        self._model_name = model_name or (
            Path(self.gguf_file).stem if self.gguf_file else self.base_path.name
        )
        self._adapter_name = adapter_name or self.adapter_path.name
        self.adapter_hash = adapter_content_hash(self.adapter_path)
        own_inst = inst is None
        self.inst = inst or BackendInstrumentation(model_name=self._model_name, **inst_kwargs)
        self.threads = threads
        self.address = address
        self._closed = False
        config = WorkerConfig(
            index=0,
            base_path=str(self.base_path),
            adapter_path=str(self.adapter_path),
            gguf_file=self.gguf_file,
            device=device,
            dtype=dtype,
            max_top_k=max_top_k,
            max_batch_size=max_batch_size,
            max_batch_tokens=max_batch_tokens,
            prefix_cache_max_bytes=prefix_cache_max_bytes,
            threads=threads,
            seed=seed,
            call_overhead_tokens=call_overhead_tokens,
            max_null_adapters=max_null_adapters,
        )
        try:
            tokenizer = load_tokenizer(self.base_path, self.gguf_file)
            self.pool = WorkerPool(
                config, count, cpus=cpus_per_worker, gpus=gpus_per_worker, address=address,
                inst=self.inst, sources=sources,
            )
        except BaseException:
            if own_inst:
                self.inst.close()
            raise
        facts = self.pool.facts[0]
        self.device = torch.device(facts.device)
        self.dtype = resolve_dtype(facts.dtype, self.device)
        self.base_id = base_identity(self.base_path, self.gguf_file, self.dtype)
        self.model_id = model_identity(
            self.base_path, self.gguf_file, self.dtype, self.adapter_hash
        )
        fingerprint_models(
            self.inst, self.base_id, self.model_id, self.base_path, self.gguf_file, self.dtype,
            self.device, self.adapter_hash,
        )
        self.encoder = TextEncoder(
            tokenizer,
            facts.context_length,
            lambda text: f"(prompt hash {self.inst.hash_prompt(text)}, {len(text)} characters)",
        )
        self.lora_rank = facts.lora_rank
        #: One worker's batch limits (each worker plans its own model calls within them).
        self.limits = BatchLimits(max_batch_size, max_batch_tokens, facts.call_overhead_tokens)
        #: What one call over the pool may hold: a worker's batch per worker.
        self.call_limits = BatchLimits(
            max_batch_size * count, max_batch_tokens * count, facts.call_overhead_tokens
        )
        lane = self.pool.lane
        source = RecordSource(
            self.inst, self.encoder, lane, self.call_limits,
            key_model=self._key_model, propagate=True,
        )
        generations = GenerationSource(
            self.inst, self.encoder, lane, self.call_limits,
            key_model=self._key_model, propagate=True,
        )
        self._views = ViewSlot(
            self.inst, source, generations, restore=lambda: lane.set_view(TRAINED)
        )
        if not self.inst.model_name:
            self.inst.model_name = self._model_name
        self.inst.model_id = self.model_id

    def _key_model(self, view_id: str) -> str | None:
        """As :class:`~swayscope.backends.hf.HFBackend`: the base view's entries name the
        base model only."""
        return self.base_id if view_id == "base" else None

    # -- identity and settings ------------------------------------------------------------

    @property
    def model_name(self) -> str:
        return self._model_name

    @property
    def adapter_name(self) -> str:
        return self._adapter_name

    @property
    def context_length(self) -> int | None:
        return self.encoder.context_length

    @property
    def max_top_k(self) -> int:
        return self.pool.max_top_k

    @property
    def workers(self) -> dict[str, Any]:
        """The pool as a run's result reports it: size, cluster, each worker's process
        and host, and the parts lost with a worker."""
        return {
            "count": self.pool.size,
            "cluster": self.pool.cluster.describe(),
            "threads_per_worker": self.threads,
            "workers": [
                {"worker": str(f.index), "pid": f.pid, "node": f.node, "device": f.device}
                for f in self.pool.facts
            ],
            "failures": self.inst.stats.worker_failures,
        }

    def tokenize(self, text: str) -> list[int]:
        return self.encoder.tokenize(text)

    def token_prefix(self, text: str, n_tokens: int) -> str:
        return self.encoder.token_prefix(text, n_tokens)

    # -- views ----------------------------------------------------------------------------

    def _set_view(self, state: ViewState) -> None:
        self.pool.lane.set_view(state)

    def null_tensors(
        self, seed: int, *, init_scale: float = 1.0, rank_scale: float = 1.0
    ) -> dict[str, torch.Tensor]:
        """The null adapter's tensors as a worker builds them (for inspection and tests)."""
        return self.pool.null_tensors(seed, float(init_scale), float(rank_scale))

    # -- lifecycle ------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the pool (and the local cluster it started), then close the instrumentation."""
        if self._closed:
            return
        self._closed = True
        self._views.close()
        try:
            self.pool.close()
        finally:
            self.inst.close()

    def __enter__(self) -> RayBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["RayBackend"]
