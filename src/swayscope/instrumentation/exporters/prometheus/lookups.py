"""The per-lookup and per-forward-call metrics, and the telemetry-health ones.

prometheus_client's own metric objects, made once; the children of each (op,
view_kind) pair are bound on first use and kept, so a hit costs one counter
increment (measured about 0.4 µs) and a forward call a few. Exporter errors and
dropped spans are read from :class:`TelemetryHealth` when a scrape asks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics_core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from swayscope.instrumentation.events import CacheLookup, DiskCacheState, ForwardCall
from swayscope.instrumentation.exporter import TelemetryHealth
from swayscope.instrumentation.exporters.prometheus import metrics as m
from swayscope.instrumentation.exporters.prometheus.workers import Adder
from swayscope.instrumentation.vocabulary import KNOWN_OPS, VIEW_KINDS


class _Children:
    """The children one (op, view_kind) pair adds to."""

    __slots__ = ("batch", "calls", "duration", "generated", "misses", "prompts", "tokens")

    def __init__(self, metrics: LookupMetrics, op: str, kind: str) -> None:
        self.misses = metrics.misses.labels(op, kind)
        self.calls = metrics.calls.labels(op, kind)
        self.prompts = metrics.prompts.labels(op, kind)
        self.duration = metrics.duration.labels(op, kind)
        self.batch = metrics.batch.labels(op)
        self.tokens = metrics.tokens.labels(kind)
        self.generated = metrics.generated.labels(kind)


class LookupMetrics:
    """Cache lookups, forward calls, batch sizes, durations (with exemplars), tokens and the
    cache's size. Series of the known ops and view kinds exist, at 0, from the start."""

    def __init__(self, registry: CollectorRegistry, add: Adder) -> None:
        r, labels = registry, m.OPKIND_LABELS
        self.hits = add(Counter(m.CACHE_HITS, m.HELP[m.CACHE_HITS], m.HIT_LABELS, registry=r))
        self.misses = add(Counter(m.CACHE_MISSES, m.HELP[m.CACHE_MISSES], labels, registry=r))
        self.calls = add(Counter(m.FORWARD_CALLS, m.HELP[m.FORWARD_CALLS], labels, registry=r))
        self.prompts = add(
            Counter(m.FORWARD_PROMPTS, m.HELP[m.FORWARD_PROMPTS], labels, registry=r)
        )
        self.batch = add(Histogram(
            m.BATCH_SIZE, m.HELP[m.BATCH_SIZE], ("op",), buckets=m.BATCH_SIZE_BUCKETS, registry=r
        ))
        self.duration = add(Histogram(
            m.FORWARD_DURATION, m.HELP[m.FORWARD_DURATION], labels,
            buckets=m.FORWARD_DURATION_BUCKETS, registry=r,
        ))
        self.tokens = add(Counter(m.TOKENS, m.HELP[m.TOKENS], ("view_kind",), registry=r))
        self.generated = add(Counter(
            m.GENERATED_TOKENS, m.HELP[m.GENERATED_TOKENS], ("view_kind",), registry=r
        ))
        self.entries = add(Gauge(m.CACHE_ENTRIES, m.HELP[m.CACHE_ENTRIES], registry=r))
        self.nbytes = add(
            Gauge(m.CACHE_BYTES, m.HELP[m.CACHE_BYTES], unit="bytes", registry=r)
        )
        self.evictions = add(
            Counter(m.CACHE_EVICTIONS, m.HELP[m.CACHE_EVICTIONS], registry=r)
        )
        self.disk_entries = add(
            Gauge(m.DISK_CACHE_ENTRIES, m.HELP[m.DISK_CACHE_ENTRIES], registry=r)
        )
        self.disk_bytes = add(
            Gauge(m.DISK_CACHE_BYTES, m.HELP[m.DISK_CACHE_BYTES], unit="bytes", registry=r)
        )
        self.disk_evictions = add(
            Gauge(m.DISK_CACHE_EVICTIONS, m.HELP[m.DISK_CACHE_EVICTIONS], registry=r)
        )
        self.disk_failures = add(Counter(
            m.DISK_CACHE_WRITE_FAILURES, m.HELP[m.DISK_CACHE_WRITE_FAILURES], registry=r
        ))
        self._disk_failures = 0
        self._children: dict[tuple[str, str], _Children] = {}
        #: (op, view_kind, tier) → its hits counter: one dict lookup a hit.
        self._hits: dict[tuple[str, str, str | None], Any] = {}
        self._last_evictions = 0
        for op in KNOWN_OPS:
            for kind in VIEW_KINDS:
                self._bind(op, kind)
                for tier in m.TIERS:
                    self.hits.labels(op, kind, tier)

    def _bind(self, op: str, kind: str) -> _Children:
        children = self._children.get((op, kind))
        if children is None:
            children = self._children[(op, kind)] = _Children(self, op, kind)
        return children

    def hit(self, ev: CacheLookup) -> None:
        key = (ev.op, ev.view_kind, ev.tier)
        counter = self._hits.get(key)
        if counter is None:
            counter = self._hits[key] = self.hits.labels(ev.op, ev.view_kind, ev.tier or "memory")
        counter.inc()

    def disk(self, ev: DiskCacheState) -> None:
        """The disk cache file as its writer last saw it."""
        self.disk_entries.set(ev.entries)
        self.disk_bytes.set(ev.nbytes)
        # A file shared by processes: its evictions are the file's, a level to read.
        self.disk_evictions.set(ev.evictions)
        if ev.write_failures > self._disk_failures:
            self.disk_failures.inc(ev.write_failures - self._disk_failures)
            self._disk_failures = ev.write_failures

    def forward(self, ev: ForwardCall) -> None:
        children = self._bind(ev.op, ev.view_kind)
        children.misses.inc(ev.cache_misses)
        children.calls.inc()
        children.prompts.inc(ev.batch_size)
        trace_id, span_id = ev.trace_id, ev.span_id
        exemplar = {"trace_id": trace_id, "span_id": span_id} if trace_id and span_id else None
        children.duration.observe(ev.duration_s, exemplar)
        children.batch.observe(ev.batch_size)
        if ev.n_tokens:
            children.tokens.inc(ev.n_tokens)
        if ev.n_tokens_generated:
            children.generated.inc(ev.n_tokens_generated)
        self.entries.set(ev.cache_entries)
        self.nbytes.set(ev.cache_bytes)
        evictions, last = ev.cache_evictions, self._last_evictions
        if evictions != last:
            # A smaller count means another cache (a new instrumentation): count it whole.
            self.evictions.inc(evictions - last if evictions > last else evictions)
            self._last_evictions = evictions


class HealthMetrics(Collector):
    """Exporter errors (by exporter, the known ones at 0 from the start) and dropped spans,
    as the bound :class:`TelemetryHealth` counts them when a scrape asks."""

    def __init__(
        self, health: Callable[[], TelemetryHealth | None], known_exporters: tuple[str, ...]
    ) -> None:
        self._health = health
        self._known = known_exporters

    def describe(self) -> Iterable[Metric]:
        return self._families(with_values=False)

    def collect(self) -> Iterable[Metric]:
        return self._families(with_values=True)

    def _families(self, *, with_values: bool) -> list[Metric]:
        errors = CounterMetricFamily(
            m.EXPORTER_ERRORS, m.HELP[m.EXPORTER_ERRORS], labels=("exporter",)
        )
        dropped = CounterMetricFamily(m.SPANS_DROPPED, m.HELP[m.SPANS_DROPPED])
        if not with_values:
            return [errors, dropped]
        health = self._health()
        counts = dict.fromkeys(self._known, 0)
        if health is not None:
            counts.update(health.exporter_errors())
        for name, n in sorted(counts.items()):
            errors.add_metric((name,), n)
        dropped.add_metric((), health.spans_dropped if health is not None else 0)
        return [errors, dropped]


__all__ = ["HealthMetrics", "LookupMetrics"]
