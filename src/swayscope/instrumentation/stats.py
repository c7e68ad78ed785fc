"""Counters a backend publishes with each suite result."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace


@dataclass(slots=True)
class BackendStats:
    """Cumulative counters; the v0 fields keep their names and meanings.

    ``forward_passes`` counts computed prompts (v0 meaning); ``forward_calls``
    counts real model invocations, where a batch is one.
    """

    cache_hits: int = 0
    cache_misses: int = 0
    forward_passes: int = 0
    #: Wall seconds inside scoring methods (compute + cache hits).
    scoring_wall_s: float = 0.0
    batches_sent: int = 0
    batched_prompts: int = 0
    max_batch_size: int = 0
    forward_calls: int = 0
    compute_errors: int = 0
    cache_evictions: int = 0
    n_tokens: int = 0
    #: Batches split in half after a device out-of-memory error.
    oom_splits: int = 0
    #: Model invocations (a forward call may need several: shared prefixes first).
    model_invocations: int = 0
    #: Token positions run through the model (shared prefixes once, padding not counted).
    tokens_computed: int = 0
    #: Token positions of scored texts taken from a shared prefix instead of computed.
    prefix_tokens_reused: int = 0
    #: Texts (and longer prefixes) that started from a shared prefix.
    prefix_hits: int = 0
    #: Shared prefixes dropped from the prefix store to stay within its byte budget.
    prefix_evictions: int = 0
    #: Shared prefixes in the prefix store now, and their bytes.
    prefix_entries: int = 0
    prefix_bytes: int = 0
    #: Model calls and computed prompts of the base view (a sweep's adapters share them).
    base_forward_calls: int = 0
    base_forward_passes: int = 0
    #: Parts of forward calls lost with a worker of a pool (each was computed again on
    #: another worker).
    worker_failures: int = 0
    #: Hits served by the durable tier (the disk cache); ``cache_hits`` counts them too.
    disk_hits: int = 0

    @property
    def total_lookups(self) -> int:
        return self.cache_hits + self.cache_misses

    @property
    def hit_rate(self) -> float:
        total = self.total_lookups
        return (self.cache_hits / total) if total > 0 else 0.0

    @property
    def avg_batch_size(self) -> float:
        return (self.batched_prompts / self.batches_sent) if self.batches_sent > 0 else 0.0

    def copy(self) -> BackendStats:
        return replace(self)

    def since(self, start: BackendStats, *, max_batch_size: int) -> BackendStats:
        """What was counted after ``start`` (an earlier copy of these stats) was taken.

        ``max_batch_size`` is a maximum, not a count: the caller gives the period's own.
        The prefix store's size (``prefix_entries``, ``prefix_bytes``) is a level, not a
        count: it is the current one.
        """
        delta = BackendStats(
            **{f.name: getattr(self, f.name) - getattr(start, f.name) for f in fields(self)}
        )
        delta.max_batch_size = max_batch_size
        delta.prefix_entries = self.prefix_entries
        delta.prefix_bytes = self.prefix_bytes
        return delta

    def to_dict(self) -> dict[str, float | int]:
        return {
            "cache_hits": self.cache_hits,
            "cache_misses": self.cache_misses,
            "forward_passes": self.forward_passes,
            "scoring_wall_s": self.scoring_wall_s,
            "hit_rate": self.hit_rate,
            "batches_sent": self.batches_sent,
            "batched_prompts": self.batched_prompts,
            "max_batch_size": self.max_batch_size,
            "avg_batch_size": self.avg_batch_size,
            "forward_calls": self.forward_calls,
            "compute_errors": self.compute_errors,
            "cache_evictions": self.cache_evictions,
            "n_tokens": self.n_tokens,
            "oom_splits": self.oom_splits,
            "model_invocations": self.model_invocations,
            "tokens_computed": self.tokens_computed,
            "prefix_tokens_reused": self.prefix_tokens_reused,
            "prefix_hits": self.prefix_hits,
            "prefix_evictions": self.prefix_evictions,
            "prefix_entries": self.prefix_entries,
            "prefix_bytes": self.prefix_bytes,
            "base_forward_calls": self.base_forward_calls,
            "base_forward_passes": self.base_forward_passes,
            "worker_failures": self.worker_failures,
            "disk_hits": self.disk_hits,
        }


__all__ = ["BackendStats"]
