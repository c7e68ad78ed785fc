"""Prometheus exporter: the ``swayscope_*`` metrics, served over HTTP and/or pushed.

Names and labels are a public contract (dashboards and alert rules use them):

====================================  =========  ==========================
metric                                type       labels
====================================  =========  ==========================
swayscope_cache_hits_total            counter    op, view_kind, probe
swayscope_cache_misses_total          counter    op, view_kind, probe
swayscope_forward_calls_total         counter    op, view_kind, probe
swayscope_forward_prompts_total       counter    op, view_kind
swayscope_batch_size                  histogram  op
swayscope_forward_duration_seconds    histogram  op, view_kind (exemplar: trace_id)
swayscope_cache_entries               gauge
swayscope_cache_bytes                 gauge
swayscope_cache_evictions_total       counter
swayscope_tokens_total                counter    view_kind
swayscope_probe_duration_seconds      histogram  probe, status
swayscope_probes_total                counter    status
swayscope_run_info                    gauge = 1  run_id, suite, base_model, adapter
swayscope_run_active                  gauge
swayscope_run_progress_ratio          gauge
swayscope_run_start_time_seconds      gauge
swayscope_exporter_errors_total       counter    exporter
swayscope_spans_dropped_total         counter
====================================  =========  ==========================

Labels stay bounded: ``view_kind`` is base|ft|scaled|null (|other for a custom
backend's views), ``probe`` is a probe name (``none`` outside a probe); prompt
hashes, exact view ids, seeds and λ values go to traces only. Misses include
model calls that raised, as ``BackendStats`` counts them, so the PromQL hit ratio
equals ``BackendStats.hit_rate``.

The registry is this exporter's own unless ``use_global_registry``. With a
``port`` the registry is served on ``address`` (127.0.0.1 by default; port 0
picks a free one, see :attr:`PrometheusExporter.port`/``url``), in the
OpenMetrics format, exemplars included, when the scraper asks for it. With
``linger_s`` the endpoint stays up after :meth:`shutdown` until one more scrape
has seen the final values (at most ``linger_s`` seconds). With a
``pushgateway_url`` the registry is pushed, grouped by job and run_id, every
``push_interval_s`` and at the end of the run.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from bisect import bisect_left
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from prometheus_client import REGISTRY as GLOBAL_REGISTRY
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, push_to_gateway
from prometheus_client.exposition import start_http_server
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.samples import Exemplar
from prometheus_client.utils import floatToGoString

from swayscope.errors import TelemetryConfigError
from swayscope.instrumentation.events import (
    CacheLookup,
    Event,
    ForwardCall,
    ProbeEnded,
    RunEnded,
    RunStarted,
)
from swayscope.instrumentation.exporter import Exporter
from swayscope.instrumentation.settings import (
    parse_address,
    parse_port,
    parse_pushgateway_url,
    parse_seconds,
)
from swayscope.instrumentation.vocabulary import KNOWN_OPS, PROBE_STATUSES, VIEW_KINDS

log = logging.getLogger(__name__)
_M = TypeVar("_M", Counter, Gauge, Histogram)

#: Label value of ``probe`` for lookups made outside any probe.
NO_PROBE = "none"
#: Exporters whose error counter exists (at 0) from the start, so increase() sees the first.
KNOWN_EXPORTERS = ("jsonl", "otel", "prometheus")

BATCH_SIZE_BUCKETS: tuple[float, ...] = tuple(float(2**i) for i in range(10))  # 1 … 512
#: 19 geometric buckets, 0.5 ms … 120 s (ratio ≈ 1.99), 3 significant digits.
FORWARD_DURATION_BUCKETS: tuple[float, ...] = tuple(
    float(f"{0.0005 * (120 / 0.0005) ** (i / 18):.3g}") for i in range(19)
)
PROBE_DURATION_BUCKETS: tuple[float, ...] = (
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
)

#: How errors name each setting when the caller gives no ``sources``.
_ARG_NAMES: Mapping[str, str] = {
    "metrics_address": "PrometheusExporter(address=...)",
    "metrics_port": "PrometheusExporter(port=...)",
    "metrics_linger_s": "PrometheusExporter(linger_s=...)",
    "metrics_wait_s": "PrometheusExporter(first_scrape_wait_s=...)",
    "pushgateway": "PrometheusExporter(pushgateway_url=...)",
}


class _Hist:
    """One histogram child: per-bucket (not cumulative) counts, sum, latest exemplar per bucket."""

    __slots__ = ("counts", "exemplars", "sum")

    def __init__(self, n_bounds: int) -> None:
        self.counts = [0] * (n_bounds + 1)  # the last one is +Inf
        self.exemplars: list[Exemplar | None] = [None] * (n_bounds + 1)
        self.sum = 0.0


class _OpKind:
    """What one (op, view_kind) pair accumulates."""

    __slots__ = ("duration", "prompts")

    def __init__(self) -> None:
        self.duration = _Hist(len(FORWARD_DURATION_BUCKETS))
        self.prompts = 0


class _Bound:
    """Everything one (op, view_kind, probe) forward call touches, looked up once."""

    __slots__ = ("batch", "opkind", "series", "tokens")

    def __init__(self, series: list[int], opkind: _OpKind, batch: _Hist, tokens: list[int]):
        self.series = series  # [hits, misses, calls]
        self.opkind = opkind
        self.batch = batch
        self.tokens = tokens


def _le(bound: float) -> str:
    """A bucket bound as prometheus_client's own histograms write it."""
    return str(floatToGoString(bound))  # type: ignore[no-untyped-call]


def _hist_buckets(
    h: _Hist, les: tuple[str, ...]
) -> list[tuple[str, float] | tuple[str, float, Exemplar]]:
    out: list[tuple[str, float] | tuple[str, float, Exemplar]] = []
    total = 0
    for le, n, ex in zip(les, h.counts, h.exemplars, strict=True):
        total += n
        out.append((le, total) if ex is None else (le, total, ex))
    return out


_DURATION_LES: tuple[str, ...] = (*map(_le, FORWARD_DURATION_BUCKETS), "+Inf")
_BATCH_LES: tuple[str, ...] = (*map(_le, BATCH_SIZE_BUCKETS), "+Inf")
_HELP = {
    "hits": "Cache lookups served from the cache.",
    "misses": "Cache lookups that needed the model (calls that raised included).",
    "calls": "Model calls (a batch is one).",
    "prompts": "Prompts sent to the model.",
    "batch": "Prompts per model call.",
    "duration": "Wall time of one model call.",
    "entries": "Entries in the forward cache.",
    "bytes": "Approximate bytes held by the forward cache.",
    "evictions": "Entries evicted from the forward cache.",
    "tokens": "Input tokens of the prompts sent to the model.",
    "errors": "Telemetry exporter failures (the run went on).",
    "dropped": "Spans that could not be delivered.",
}
_SERIES_LABELS = ("op", "view_kind", "probe")


class _HotMetrics(Collector):
    """The per-lookup and per-forward-call metrics, kept as plain numbers under one lock
    and turned into metric families at scrape time (a few hundred ns per event instead
    of a prometheus_client child update per metric); also the telemetry-health metrics,
    read from TelemetryHealth at scrape time."""

    def __init__(self, owner: PrometheusExporter) -> None:
        self._owner = owner
        self.lock = threading.Lock()
        self.series: dict[tuple[str, str, str], list[int]] = {}
        self.opkinds: dict[tuple[str, str], _OpKind] = {}
        self.batches: dict[str, _Hist] = {}
        self.tokens: dict[str, list[int]] = {}
        self.cache = [0, 0, 0, 0]  # entries, bytes, evictions total, last eviction snapshot

    def bind(self, op: str, kind: str, probe: str) -> _Bound:
        with self.lock:
            series = self.series.setdefault((op, kind, probe), [0, 0, 0])
            return _Bound(series, self.opkind(op, kind), self.batch(op), self.token(kind))

    def opkind(self, op: str, kind: str) -> _OpKind:
        return self.opkinds.setdefault((op, kind), _OpKind())

    def batch(self, op: str) -> _Hist:
        return self.batches.setdefault(op, _Hist(len(BATCH_SIZE_BUCKETS)))

    def token(self, kind: str) -> list[int]:
        return self.tokens.setdefault(kind, [0])

    def describe(self) -> Iterable[Metric]:
        return self._families(empty=True)

    def collect(self) -> Iterable[Metric]:
        owner = self._owner
        generation = owner.generation
        families = self._families(empty=False)
        with owner.scraped:
            owner.scraped_generation = max(owner.scraped_generation, generation)
            owner.scraped.notify_all()
        if owner.closing:
            owner.final_scrape.set()
        return families

    def _families(self, *, empty: bool) -> list[Metric]:
        hits = CounterMetricFamily("swayscope_cache_hits", _HELP["hits"], labels=_SERIES_LABELS)
        misses = CounterMetricFamily(
            "swayscope_cache_misses", _HELP["misses"], labels=_SERIES_LABELS
        )
        calls = CounterMetricFamily(
            "swayscope_forward_calls", _HELP["calls"], labels=_SERIES_LABELS
        )
        prompts = CounterMetricFamily(
            "swayscope_forward_prompts", _HELP["prompts"], labels=("op", "view_kind")
        )
        batch = HistogramMetricFamily("swayscope_batch_size", _HELP["batch"], labels=("op",))
        duration = HistogramMetricFamily(
            "swayscope_forward_duration_seconds", _HELP["duration"], labels=("op", "view_kind")
        )
        tokens = CounterMetricFamily("swayscope_tokens", _HELP["tokens"], labels=("view_kind",))
        errors = CounterMetricFamily(
            "swayscope_exporter_errors", _HELP["errors"], labels=("exporter",)
        )
        fams: list[Metric] = [hits, misses, calls, prompts, batch, duration, tokens, errors]
        if empty:
            return [
                *fams,
                GaugeMetricFamily("swayscope_cache_entries", _HELP["entries"]),
                GaugeMetricFamily("swayscope_cache_bytes", _HELP["bytes"], unit="bytes"),
                CounterMetricFamily("swayscope_cache_evictions", _HELP["evictions"]),
                CounterMetricFamily("swayscope_spans_dropped", _HELP["dropped"]),
            ]
        with self.lock:
            for key, (h, m, c) in self.series.items():
                hits.add_metric(key, h)
                misses.add_metric(key, m)
                calls.add_metric(key, c)
            for okey, ok in self.opkinds.items():
                prompts.add_metric(okey, ok.prompts)
                d = ok.duration
                duration.add_metric(okey, _hist_buckets(d, _DURATION_LES), d.sum)
            for op, bh in self.batches.items():
                batch.add_metric((op,), _hist_buckets(bh, _BATCH_LES), bh.sum)
            for kind, (t,) in self.tokens.items():
                tokens.add_metric((kind,), t)
            entries, nbytes, evictions, _ = self.cache
        health = getattr(self._owner, "health", None)
        counts = dict.fromkeys(self._owner.known_exporters, 0)
        if health is not None:
            counts.update(health.exporter_errors())
        for name, n in sorted(counts.items()):
            errors.add_metric((name,), n)
        return [
            *fams,
            GaugeMetricFamily("swayscope_cache_entries", _HELP["entries"], value=entries),
            GaugeMetricFamily("swayscope_cache_bytes", _HELP["bytes"], value=nbytes, unit="bytes"),
            CounterMetricFamily("swayscope_cache_evictions", _HELP["evictions"], value=evictions),
            CounterMetricFamily(
                "swayscope_spans_dropped",
                _HELP["dropped"],
                value=health.spans_dropped if health is not None else 0,
            ),
        ]


class PrometheusExporter(Exporter):
    """Keeps the ``swayscope_*`` metrics up to date from core events; serves and/or pushes them.

    Construction fails with :class:`TelemetryConfigError` (before any forward pass)
    when the address does not resolve, the port is in use, or a value is malformed.
    """

    name = "prometheus"

    def __init__(
        self,
        *,
        registry: CollectorRegistry | None = None,
        use_global_registry: bool = False,
        address: str = "127.0.0.1",
        port: int | None = None,
        linger_s: float = 0.0,
        pushgateway_url: str | None = None,
        push_job: str = "swayscope",
        push_interval_s: float = 10.0,
        push_timeout_s: float = 2.0,
        run_id: str | None = None,
        first_scrape_wait_s: float = 0.0,
        sources: Mapping[str, str] | None = None,
    ) -> None:
        names = {**_ARG_NAMES, **(sources or {})}
        self.first_scrape_wait_s = parse_seconds(first_scrape_wait_s, names["metrics_wait_s"])
        # Scrapes that started after the run's series were zeroed (see _on_run_started).
        self.scraped = threading.Condition()
        self.generation = 0
        self.scraped_generation = 0
        self.address = parse_address(address, names["metrics_address"])
        requested_port = None if port is None else parse_port(port, names["metrics_port"])
        self.linger_s = parse_seconds(linger_s, names["metrics_linger_s"])
        self.pushgateway_url = (
            parse_pushgateway_url(pushgateway_url, names["pushgateway"])
            if pushgateway_url
            else None
        )
        self.push_job = push_job
        self.push_interval_s = push_interval_s
        self.push_timeout_s = push_timeout_s
        self.run_id = run_id
        self.known_exporters = KNOWN_EXPORTERS + (("pushgateway",) if pushgateway_url else ())
        if registry is not None and use_global_registry:
            raise TelemetryConfigError(
                "give either registry= or use_global_registry=True, not both"
            )
        self.registry: CollectorRegistry = (
            GLOBAL_REGISTRY if use_global_registry else registry or CollectorRegistry()
        )
        self.closing = False
        self.final_scrape = threading.Event()
        self._closed = False
        self._collectors: list[Collector] = []
        self._push_lock = threading.Lock()
        self._stop = threading.Event()
        self._push_thread: threading.Thread | None = None
        self._server: Any = None
        self._hits: dict[tuple[str, str, str | None], list[int]] = {}
        self._fwd: dict[tuple[str, str, str | None], _Bound] = {}
        try:
            self._register_metrics()
            self._lock = self.hot.lock
            self._cache = self.hot.cache
        except ValueError as exc:  # duplicated names in the (global) registry
            self._unregister()
            raise TelemetryConfigError(
                f"the swayscope metrics are already registered in this registry ({exc}); "
                "shut the other PrometheusExporter down first or give each its own registry"
            ) from exc
        self.port: int | None = None
        self.url: str | None = None
        if requested_port is not None:
            self._serve(requested_port, names)
        if self.pushgateway_url is not None and push_interval_s > 0:
            self._push_thread = threading.Thread(
                target=self._push_loop, name="swayscope-pushgateway", daemon=True
            )
            self._push_thread.start()

    # -- metrics -------------------------------------------------------------------------

    def _add(self, metric: _M) -> _M:
        self._collectors.append(metric)
        return metric

    def _register_metrics(self) -> None:
        r = self.registry
        self.hot = _HotMetrics(self)
        r.register(self.hot)
        self._collectors.append(self.hot)
        self.probe_duration = self._add(Histogram(
            "swayscope_probe_duration_seconds", "Wall time of one probe.", ("probe", "status"),
            buckets=PROBE_DURATION_BUCKETS, registry=r))
        self.probes = self._add(Counter(
            "swayscope_probes", "Probes finished, by status.", ("status",), registry=r))
        self.run_info = self._add(Gauge(
            "swayscope_run_info", "The current run (value 1).",
            ("run_id", "suite", "base_model", "adapter"), registry=r))
        self.run_active = self._add(Gauge(
            "swayscope_run_active", "1 while a run is in progress.", registry=r))
        self.run_progress = self._add(Gauge(
            "swayscope_run_progress_ratio", "Probes done / probes planned.", registry=r))
        self.run_start_time = self._add(Gauge(
            "swayscope_run_start_time_seconds", "Unix time the current run started.",
            unit="seconds", registry=r))
        # Series of bounded, known label values exist (at 0) before the first event.
        for op in KNOWN_OPS:
            self.hot.batch(op)
            for kind in VIEW_KINDS:
                self.hot.opkind(op, kind)
        for kind in VIEW_KINDS:
            self.hot.token(kind)
        for status in PROBE_STATUSES:
            self.probes.labels(status)

    def _unregister(self) -> None:
        for collector in self._collectors:
            with contextlib.suppress(KeyError):
                self.registry.unregister(collector)
        self._collectors.clear()

    # -- events --------------------------------------------------------------------------

    def export(self, event: Event) -> None:
        kind = type(event)
        if kind is CacheLookup:
            if event.hit:  # type: ignore[union-attr]
                key = (event.op, event.view_kind, event.probe)  # type: ignore[union-attr]
                series = self._hits.get(key)
                if series is None:
                    series = self._hits[key] = self.hot.bind(
                        key[0], key[1], key[2] or NO_PROBE
                    ).series
                with self._lock:
                    series[0] += 1
        elif kind is ForwardCall:
            self._on_forward(event)  # type: ignore[arg-type]
        elif kind is ProbeEnded:
            self._on_probe_ended(event)  # type: ignore[arg-type]
        elif kind is RunStarted:
            self._on_run_started(event)  # type: ignore[arg-type]
        elif kind is RunEnded:
            self.run_active.set(0)
            if event.status == "interrupted":  # type: ignore[union-attr]
                self.linger_s = 0.0  # the user stopped the run: do not hold the process

    def _on_forward(self, ev: ForwardCall) -> None:
        key = (ev.op, ev.view_kind, ev.probe)
        b = self._fwd.get(key)
        if b is None:
            b = self._fwd[key] = self.hot.bind(ev.op, ev.view_kind, ev.probe or NO_PROBE)
        d = ev.duration_s
        n = ev.batch_size
        di = bisect_left(FORWARD_DURATION_BUCKETS, d)
        bi = bisect_left(BATCH_SIZE_BUCKETS, n)
        tid = ev.trace_id
        ex = Exemplar({"trace_id": tid}, d, time.time()) if tid else None
        evictions = ev.cache_evictions
        with self._lock:
            s = b.series
            s[1] += ev.cache_misses
            s[2] += 1
            ok = b.opkind
            ok.prompts += n
            h = ok.duration
            h.counts[di] += 1
            h.sum += d
            if ex is not None:
                h.exemplars[di] = ex
            bh = b.batch
            bh.counts[bi] += 1
            bh.sum += n
            if ev.n_tokens:
                b.tokens[0] += ev.n_tokens
            c = self._cache
            c[0] = ev.cache_entries
            c[1] = ev.cache_bytes
            last = c[3]
            if evictions != last:
                # A smaller count means another cache (a new instrumentation): count it whole.
                c[2] += evictions - last if evictions > last else evictions
                c[3] = evictions

    def set_run_id(self, run_id: str) -> None:
        """Group Pushgateway pushes under ``run_id`` before the run starts (RunStarted sets it)."""
        self.run_id = run_id

    def _on_probe_ended(self, ev: ProbeEnded) -> None:
        if ev.status == "not_run":
            return  # stopped mid-probe: no verdict to count
        self.probe_duration.labels(ev.probe, ev.status).observe(ev.duration_s)
        self.probes.labels(ev.status).inc()
        if ev.total > 0:
            self.run_progress.set(min(1.0, ev.done / ev.total))

    def _on_run_started(self, ev: RunStarted) -> None:
        self.run_id = ev.run_id
        self.run_info.clear()
        self.run_info.labels(ev.run_id, ev.suite, ev.base_model, ev.adapter).set(1)
        self.run_active.set(1)
        self.run_progress.set(0)
        self.run_start_time.set(ev.start_ns / 1e9)
        # Every (op, view_kind, probe) series exists at 0 before its first increment:
        # Prometheus' rate()/increase() cannot see the increment that creates a series.
        for probe in (*ev.probes, NO_PROBE):
            for op in KNOWN_OPS:
                for kind in VIEW_KINDS:
                    self.hot.bind(op, kind, probe)
        if self._server is not None and self.first_scrape_wait_s > 0:
            self._wait_for_scrape(self.first_scrape_wait_s)

    def _wait_for_scrape(self, timeout_s: float) -> bool:
        """Block until a scrape that began after this call has finished (or timeout)."""
        with self.scraped:
            self.generation += 1
            target = self.generation
            return self.scraped.wait_for(
                lambda: self.scraped_generation >= target, timeout=timeout_s
            )

    # -- exposition ----------------------------------------------------------------------

    def _serve(self, port: int, names: Mapping[str, str]) -> None:
        where = f"{self.address}:{port}"
        try:
            server, _thread = start_http_server(port, addr=self.address, registry=self.registry)
        except OSError as exc:
            self._unregister()
            src = f"{names['metrics_address']} / {names['metrics_port']}"
            reason = exc.strerror or str(exc)
            raise TelemetryConfigError(
                f"cannot serve Prometheus metrics on {where!r} (from {src}): {reason}. "
                "Choose a free port (0 picks one) and an address of this machine "
                "(127.0.0.1 by default)."
            ) from exc
        self._server = server
        self.port = int(server.server_port)
        host = f"[{self.address}]" if ":" in self.address else self.address
        self.url = f"http://{host}:{self.port}/metrics"

    def _push(self) -> bool:
        if self.pushgateway_url is None or self.run_id is None:
            return False
        with self._push_lock:
            try:
                push_to_gateway(
                    self.pushgateway_url,
                    job=self.push_job,
                    registry=self.registry,
                    grouping_key={"run_id": self.run_id},
                    timeout=self.push_timeout_s,
                )
            except Exception as exc:
                health = getattr(self, "health", None)
                if health is not None:
                    health.record_error("pushgateway", exc)
                else:
                    log.warning("push to %s failed: %s", self.pushgateway_url, exc)
                return False
        return True

    def _push_loop(self) -> None:
        while not self._stop.wait(self.push_interval_s):
            self._push()

    def push(self) -> bool:
        """Push the registry to the Pushgateway now; False when not configured or failed."""
        return self._push()

    def force_flush(self, timeout_s: float = 5.0) -> bool:
        """At run end: push the final values (bounded by ``push_timeout_s``)."""
        if self.pushgateway_url is None:
            return True
        return self._push()

    def shutdown(self) -> None:
        """Final push, then (with ``linger_s``) serve until one more scrape, then stop."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self._push_thread is not None:
            self._push_thread.join(self.push_timeout_s + 1.0)
        self.run_active.set(0)
        self._push()
        if self._server is not None:
            self.closing = True
            if self.linger_s > 0:
                self.final_scrape.wait(self.linger_s)
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self.registry is GLOBAL_REGISTRY:
            self._unregister()


__all__ = [
    "BATCH_SIZE_BUCKETS",
    "FORWARD_DURATION_BUCKETS",
    "KNOWN_OPS",
    "NO_PROBE",
    "PROBE_DURATION_BUCKETS",
    "PrometheusExporter",
]
