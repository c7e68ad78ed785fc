"""A forward worker: one copy of the base model and its adapter, computing parts of calls.

Pure compute: it loads the model once (an :class:`~swayscope.backends.hf.HFBackend`
with an instrumentation of its own, no exporters: its counters are the worker's),
then turns each :class:`~.messages.CallRequest` into records with the backend's
forward pass (or into generations with its generator), under the view state the
request carries (null adapters built from their seeds, identically in every process). A
sweep gives a worker one adapter after another (:meth:`ForwardWorker.attach`: peft's
``delete_adapter``/``load_adapter`` on the loaded base, the previous adapter put back
when the new one does not attach); a part that names an adapter the worker does not hold
(it was restarted, or the part was retried away from its home worker) has it attached
first. Nothing here knows of probes, the driver's cache or its exporters; the driver
makes the worker's spans from what :meth:`ForwardWorker.compute` sends back. The class is
plain Python: the pool makes it a Ray actor; tests may run it in process.
"""

from __future__ import annotations

import os
import socket
import time
import traceback
from typing import Any

import torch

from swayscope.backends.hf.backend import HFBackend
from swayscope.backends.hf.view_state import TRAINED
from swayscope.backends.ray.messages import (
    AdapterRef,
    AttachReply,
    CallReply,
    CallRequest,
    GenerateTask,
    WorkerConfig,
    WorkerFacts,
)
from swayscope.errors import AdapterLoadError, SwayscopeError
from swayscope.instrumentation import BackendInstrumentation, RemoteSpan, parse_traceparent
from swayscope.instrumentation.tracecontext import new_span_id
from swayscope.instrumentation.vocabulary import (
    SPAN_WORKER_COMPUTE,
    SPAN_WORKER_QUEUE,
    WORKER,
    WORKER_ATTEMPT,
    WORKER_BATCH_SIZE,
    WORKER_PID,
    WORKER_TOKENS,
)

#: The worker's counters a part's reply carries (what its forward pass counted for it).
COUNTED = ("model_invocations", "prefix_hits", "prefix_evictions", "oom_splits")


def resident_bytes() -> int:
    """This process's resident memory (Linux ``/proc``; 0 where unknown)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as fh:
            pages = int(fh.read().split()[1])
    except (OSError, ValueError, IndexError):
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE")


class ForwardWorker:
    """Loads the model when built; a model that cannot be loaded is reported by
    :meth:`facts` (the worker stays up to say so), never raised from here."""

    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        self.pid = os.getpid()
        self._backend: HFBackend | None = None
        self._state = TRAINED
        self._error: str | None = None
        self._adapter_error = False
        self.calls = 0
        self.texts = 0
        try:
            self._backend = HFBackend(
                config.base_path,
                config.adapter_path,
                device=config.device,
                dtype=config.dtype,
                gguf_file=config.gguf_file,
                max_top_k=config.max_top_k,
                max_batch_tokens=config.max_batch_tokens,
                max_batch_size=config.max_batch_size,
                inst=BackendInstrumentation(),
                seed=config.seed,
                max_null_adapters=config.max_null_adapters,
                call_overhead_tokens=config.call_overhead_tokens,
                prefix_cache_max_bytes=config.prefix_cache_max_bytes,
                threads=config.threads,
            )
        except SwayscopeError as exc:
            self._error = str(exc)
            self._adapter_error = isinstance(exc, AdapterLoadError)
        except Exception as exc:
            self._error = f"{type(exc).__name__}: {exc}"

    def facts(self) -> WorkerFacts:
        """What the driver needs to know of the loaded model, or why it is not loaded."""
        node = socket.gethostname()
        backend = self._backend
        if backend is None:
            return WorkerFacts(
                self.config.index, self.pid, node, error=self._error,
                adapter_error=self._adapter_error,
            )
        fp = backend.forward_pass
        return WorkerFacts(
            self.config.index,
            self.pid,
            node,
            vocab_size=fp.vocab_size,
            context_length=backend.context_length,
            lora_rank=backend.lora_rank,
            call_overhead_tokens=backend.call_overhead_tokens,
            prefix_reuse=fp.prefix_reuse,
            device=str(backend.device),
            dtype=str(backend.dtype).removeprefix("torch."),
            threads=backend.threads,
        )

    def counters(self) -> dict[str, int]:
        """Parts computed, and the texts in them, since the worker (re)started."""
        return {"calls": self.calls, "texts": self.texts}

    def null_tensors(
        self, seed: int, init_scale: float, rank_scale: float
    ) -> dict[str, torch.Tensor]:
        """A null adapter's tensors by ``module.family`` name, as this worker builds them."""
        return self._loaded().null_tensors(seed, init_scale=init_scale, rank_scale=rank_scale)

    def _loaded(self) -> HFBackend:
        if self._backend is None:
            raise SwayscopeError(f"the worker has no model: {self._error}")
        return self._backend

    def attach(self, adapter: AdapterRef) -> AttachReply:
        """Make ``adapter`` this worker's adapter, on the base it loaded once. When it cannot
        be attached, the previous adapter is back in place and the reply says why."""
        t0 = time.perf_counter()
        try:
            swapped = self._hold(adapter)
        except SwayscopeError as exc:
            return AttachReply(
                self.config.index, self.pid, time.perf_counter() - t0, error=str(exc)
            )
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            return AttachReply(self.config.index, self.pid, time.perf_counter() - t0, error=error)
        return AttachReply(
            self.config.index, self.pid, time.perf_counter() - t0 if swapped else 0.0,
            lora_rank=self._loaded().lora_rank,
        )

    def _hold(self, adapter: AdapterRef) -> bool:
        """Swap ``adapter`` in unless it is the one attached (by content); whether it swapped.
        The layers go back to the adapter as trained first (no null adapter in place)."""
        backend = self._loaded()
        if backend.adapter_hash == adapter.content:
            return False
        backend.set_view_state(TRAINED)
        self._state = TRAINED
        backend.swap_adapter(adapter.path)
        return True

    def compute(self, request: CallRequest) -> CallReply:
        """Compute one part under its view state; a failure to compute is in the reply."""
        started_ns = time.time_ns()
        backend = self._loaded()
        stats = backend.inst.stats
        before = [getattr(stats, name) for name in COUNTED]
        compute_start_ns = time.time_ns()
        t0 = time.perf_counter()
        error: str | None = None
        records: list[Any] = []
        try:
            if request.adapter is not None:
                self._hold(request.adapter)
            if request.view != self._state:
                backend.set_view_state(request.view)
                self._state = request.view
            task = request.task
            if isinstance(task, GenerateTask):
                records = backend.generator.generate(
                    request.batch, view_id=request.view_id,
                    max_new_tokens=task.max_new_tokens, stop=task.stop,
                )
            else:
                records = backend.forward_pass.compute(
                    request.batch, view_id=request.view_id, need=task
                )
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            traceback.clear_frames(exc.__traceback__)
        compute_s = time.perf_counter() - t0
        ended_ns = time.time_ns()
        n_tokens = sum(len(ids) for ids in request.batch)
        if error is None:
            self.calls += 1
            self.texts += len(request.batch)
        return CallReply(
            records=records,
            worker=self.config.index,
            pid=self.pid,
            started_ns=started_ns,
            compute_start_ns=compute_start_ns,
            ended_ns=ended_ns,
            compute_s=compute_s,
            n_tokens=n_tokens,
            counts={
                name: getattr(stats, name) - b for name, b in zip(COUNTED, before, strict=True)
            },
            prefix_entries=stats.prefix_entries,
            prefix_bytes=stats.prefix_bytes,
            memory_bytes=resident_bytes(),
            device_memory_bytes=self._device_memory(backend),
            spans=self._spans(request, started_ns, compute_start_ns, ended_ns, n_tokens, error),
            error=error,
        )

    def _spans(
        self,
        request: CallRequest,
        started_ns: int,
        compute_start_ns: int,
        ended_ns: int,
        n_tokens: int,
        error: str | None,
    ) -> tuple[RemoteSpan, ...]:
        """The part's queue-wait and compute spans, children of the call's span (none when
        the call was not traced)."""
        parent = parse_traceparent(request.traceparent)
        if parent is None or not parent.sampled:
            return ()
        attrs: dict[str, str | int | float | bool] = {
            WORKER: str(self.config.index),
            WORKER_ATTEMPT: request.attempt,
            WORKER_PID: self.pid,
            WORKER_BATCH_SIZE: len(request.batch),
            WORKER_TOKENS: n_tokens,
        }
        queue = RemoteSpan(
            SPAN_WORKER_QUEUE, parent.trace_id, new_span_id(), parent.span_id,
            min(request.dispatched_ns, started_ns), started_ns, attrs,
        )
        compute = RemoteSpan(
            SPAN_WORKER_COMPUTE, parent.trace_id, new_span_id(), parent.span_id,
            compute_start_ns, ended_ns, attrs, error,
        )
        return (queue, compute)

    @staticmethod
    def _device_memory(backend: HFBackend) -> int:
        if backend.device.type != "cuda":
            return 0
        return int(torch.cuda.memory_allocated(backend.device))


__all__ = ["COUNTED", "ForwardWorker", "resident_bytes"]
