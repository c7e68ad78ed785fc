"""The per-lookup, per-forward-call and per-probe metrics: plain numbers in slotted records,
one lock.

Updating a prometheus_client child per metric costs microseconds per event;
here an event adds to a few numbers (a few hundred ns) and :class:`HotMetrics`
turns them into metric families when a scrape or push asks. It also reports the
telemetry-health metrics, read from :class:`TelemetryHealth` at that moment.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.samples import Exemplar
from prometheus_client.utils import floatToGoString

from swayscope.instrumentation.exporter import TelemetryHealth
from swayscope.instrumentation.exporters.prometheus import metrics as m

HistogramBuckets = list[tuple[str, float] | tuple[str, float, Exemplar]]


def _le(bound: float) -> str:
    """A bucket bound as prometheus_client's own histograms write it."""
    return str(floatToGoString(bound))  # type: ignore[no-untyped-call]


_DURATION_LES: tuple[str, ...] = (*map(_le, m.FORWARD_DURATION_BUCKETS), "+Inf")
_BATCH_LES: tuple[str, ...] = (*map(_le, m.BATCH_SIZE_BUCKETS), "+Inf")


class HistogramCounts:
    """One histogram child: per-bucket (not cumulative) counts, the sum, and the latest
    exemplar of each bucket. The last bucket is +Inf."""

    __slots__ = ("bucket_counts", "exemplars", "sum")

    def __init__(self, n_bounds: int) -> None:
        self.bucket_counts = [0] * (n_bounds + 1)
        self.exemplars: list[Exemplar | None] = [None] * (n_bounds + 1)
        self.sum = 0.0

    def observe(self, bucket: int, value: float, exemplar: Exemplar | None = None) -> None:
        self.bucket_counts[bucket] += 1
        self.sum += value
        if exemplar is not None:
            self.exemplars[bucket] = exemplar

    def cumulative(self, les: tuple[str, ...]) -> HistogramBuckets:
        """(le, cumulative count[, exemplar]) per bucket, as HistogramMetricFamily wants."""
        out: HistogramBuckets = []
        total = 0
        for le, n, ex in zip(les, self.bucket_counts, self.exemplars, strict=True):
            total += n
            out.append((le, total) if ex is None else (le, total, ex))
        return out


class OpKindCounts:
    """What one (op, view_kind) pair accumulates: lookups, calls, prompts, call durations."""

    __slots__ = ("calls", "duration", "hits", "misses", "prompts")

    def __init__(self) -> None:
        self.hits = 0
        self.misses = 0
        self.calls = 0
        self.prompts = 0
        self.duration = HistogramCounts(len(m.FORWARD_DURATION_BUCKETS))


class TokenCount:
    """Input tokens sent to the model for one view kind."""

    __slots__ = ("total",)

    def __init__(self) -> None:
        self.total = 0


class CacheGauges:
    """The forward cache as the last forward call saw it, and evictions counted so far."""

    __slots__ = ("entries", "evictions_total", "last_evictions", "nbytes")

    def __init__(self) -> None:
        self.entries = 0
        self.nbytes = 0
        self.evictions_total = 0
        self.last_evictions = 0

    def update(self, entries: int, nbytes: int, evictions: int) -> None:
        self.entries = entries
        self.nbytes = nbytes
        last = self.last_evictions
        if evictions != last:
            # A smaller count means another cache (a new instrumentation): count it whole.
            self.evictions_total += evictions - last if evictions > last else evictions
            self.last_evictions = evictions


@dataclass(frozen=True, slots=True)
class ForwardTargets:
    """Everything one (op, view_kind) forward call adds to, looked up once."""

    opkind: OpKindCounts
    batch: HistogramCounts
    tokens: TokenCount


class HotMetrics(Collector):
    """The hot counters and histograms under one lock, collected into metric families."""

    def __init__(
        self,
        health: Callable[[], TelemetryHealth | None],
        known_exporters: tuple[str, ...],
    ) -> None:
        self._health = health
        self._known_exporters = known_exporters
        self.lock = threading.Lock()
        self.opkinds: dict[tuple[str, str], OpKindCounts] = {}
        self.batches: dict[str, HistogramCounts] = {}
        self.tokens: dict[str, TokenCount] = {}
        #: (probe, status) → wall seconds of the probe in the current run.
        self.probe_times: dict[tuple[str, str], float] = {}
        self.cache = CacheGauges()

    def bind(self, op: str, kind: str) -> ForwardTargets:
        """The records of (op, kind), created at 0 if new."""
        with self.lock:
            return ForwardTargets(self.opkind(op, kind), self.batch(op), self.token(kind))

    def probe_finished(self, probe: str, status: str, duration_s: float) -> None:
        with self.lock:
            self.probe_times[(probe, status)] = round(duration_s, 6)  # µs: shorter scrapes

    def clear_probes(self) -> None:
        """A run starts: the previous run's probe series go (one series per probe of a run)."""
        with self.lock:
            self.probe_times.clear()

    def opkind(self, op: str, kind: str) -> OpKindCounts:
        return self.opkinds.setdefault((op, kind), OpKindCounts())

    def batch(self, op: str) -> HistogramCounts:
        return self.batches.setdefault(op, HistogramCounts(len(m.BATCH_SIZE_BUCKETS)))

    def token(self, kind: str) -> TokenCount:
        return self.tokens.setdefault(kind, TokenCount())

    def describe(self) -> Iterable[Metric]:
        return [*_HotFamilies.empty().all(), *self._scalar_families(None)]

    def collect(self) -> Iterable[Metric]:
        families = _HotFamilies.empty()
        with self.lock:
            families.fill(self)
            cache = self.cache
            scalars = (cache.entries, cache.nbytes, cache.evictions_total)
        health = self._health()
        errors = dict.fromkeys(self._known_exporters, 0)
        if health is not None:
            errors.update(health.exporter_errors())
        for name, n in sorted(errors.items()):
            families.errors.add_metric((name,), n)
        return [*families.all(), *self._scalar_families(scalars)]

    def _scalar_families(self, values: tuple[int, int, int] | None) -> list[Metric]:
        """Cache entries, bytes and evictions, and dropped spans; no values when None."""
        if values is None:
            return [
                GaugeMetricFamily(m.CACHE_ENTRIES, m.HELP[m.CACHE_ENTRIES]),
                GaugeMetricFamily(m.CACHE_BYTES, m.HELP[m.CACHE_BYTES], unit="bytes"),
                CounterMetricFamily(m.CACHE_EVICTIONS, m.HELP[m.CACHE_EVICTIONS]),
                CounterMetricFamily(m.SPANS_DROPPED, m.HELP[m.SPANS_DROPPED]),
            ]
        entries, nbytes, evictions = values
        health = self._health()
        return [
            GaugeMetricFamily(m.CACHE_ENTRIES, m.HELP[m.CACHE_ENTRIES], value=entries),
            GaugeMetricFamily(m.CACHE_BYTES, m.HELP[m.CACHE_BYTES], value=nbytes, unit="bytes"),
            CounterMetricFamily(m.CACHE_EVICTIONS, m.HELP[m.CACHE_EVICTIONS], value=evictions),
            CounterMetricFamily(
                m.SPANS_DROPPED,
                m.HELP[m.SPANS_DROPPED],
                value=health.spans_dropped if health is not None else 0,
            ),
        ]


@dataclass(frozen=True, slots=True)
class _HotFamilies:
    """The labelled families :class:`HotMetrics` reports, filled at collect time."""

    hits: CounterMetricFamily
    misses: CounterMetricFamily
    calls: CounterMetricFamily
    prompts: CounterMetricFamily
    batch: HistogramMetricFamily
    duration: HistogramMetricFamily
    tokens: CounterMetricFamily
    errors: CounterMetricFamily
    probe_durations: GaugeMetricFamily

    @classmethod
    def empty(cls) -> _HotFamilies:
        return cls(
            CounterMetricFamily(m.CACHE_HITS, m.HELP[m.CACHE_HITS], labels=m.OPKIND_LABELS),
            CounterMetricFamily(m.CACHE_MISSES, m.HELP[m.CACHE_MISSES], labels=m.OPKIND_LABELS),
            CounterMetricFamily(m.FORWARD_CALLS, m.HELP[m.FORWARD_CALLS], labels=m.OPKIND_LABELS),
            CounterMetricFamily(
                m.FORWARD_PROMPTS, m.HELP[m.FORWARD_PROMPTS], labels=m.OPKIND_LABELS
            ),
            HistogramMetricFamily(m.BATCH_SIZE, m.HELP[m.BATCH_SIZE], labels=("op",)),
            HistogramMetricFamily(
                m.FORWARD_DURATION, m.HELP[m.FORWARD_DURATION], labels=m.OPKIND_LABELS
            ),
            CounterMetricFamily(m.TOKENS, m.HELP[m.TOKENS], labels=("view_kind",)),
            CounterMetricFamily(
                m.EXPORTER_ERRORS, m.HELP[m.EXPORTER_ERRORS], labels=("exporter",)
            ),
            GaugeMetricFamily(m.PROBE_DURATION, m.HELP[m.PROBE_DURATION], labels=m.PROBE_LABELS),
        )

    def all(self) -> list[Metric]:
        return [
            self.hits, self.misses, self.calls, self.prompts, self.batch, self.duration,
            self.tokens, self.errors, self.probe_durations,
        ]

    def fill(self, hot: HotMetrics) -> None:
        """Add ``hot``'s current values (its lock held)."""
        for okey, ok in hot.opkinds.items():
            self.hits.add_metric(okey, ok.hits)
            self.misses.add_metric(okey, ok.misses)
            self.calls.add_metric(okey, ok.calls)
            self.prompts.add_metric(okey, ok.prompts)
            d = ok.duration
            self.duration.add_metric(okey, d.cumulative(_DURATION_LES), d.sum)
        for op, bh in hot.batches.items():
            self.batch.add_metric((op,), bh.cumulative(_BATCH_LES), bh.sum)
        for kind, t in hot.tokens.items():
            self.tokens.add_metric((kind,), t.total)
        for pkey, seconds in hot.probe_times.items():
            self.probe_durations.add_metric(pkey, seconds)
