"""PrometheusExporter: core events in, ``swayscope_*`` metrics out, served and/or pushed."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
import threading
from collections.abc import Mapping
from typing import Any, TypeVar

from prometheus_client import REGISTRY as GLOBAL_REGISTRY
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, push_to_gateway
from prometheus_client.registry import Collector

from swayscope.errors import TelemetryConfigError
from swayscope.instrumentation.events import (
    CacheLookup,
    DiskCacheState,
    Event,
    ForwardCall,
    ProbeEnded,
    RunEnded,
    RunStarted,
    SweepEnded,
    SweepStarted,
)
from swayscope.instrumentation.exporter import Exporter, TelemetryHealth
from swayscope.instrumentation.exporters.prometheus import metrics as m
from swayscope.instrumentation.exporters.prometheus.lookups import HealthMetrics, LookupMetrics
from swayscope.instrumentation.exporters.prometheus.server import Scrapers, serve
from swayscope.instrumentation.exporters.prometheus.workers import WORKER_EVENTS, WorkerMetrics
from swayscope.instrumentation.settings import (
    parse_address,
    parse_port,
    parse_pushgateway_url,
    parse_seconds,
)
from swayscope.instrumentation.vocabulary import PROBE_STATUSES

log = logging.getLogger(__name__)
_M = TypeVar("_M", Counter, Gauge, Histogram)

#: How errors name each setting when the caller gives no ``sources``.
_ARG_NAMES: Mapping[str, str] = {
    "metrics_address": "PrometheusExporter(address=...)",
    "metrics_port": "PrometheusExporter(port=...)",
    "metrics_linger_s": "PrometheusExporter(linger_s=...)",
    "metrics_wait_s": "PrometheusExporter(first_scrape_wait_s=...)",
    "pushgateway": "PrometheusExporter(pushgateway_url=...)",
}

def default_push_instance() -> str:
    """``host:pid``: a pushed run's ``instance``, as a scraped one's is ``host:port``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _choose_registry(registry: CollectorRegistry | None, use_global: bool) -> CollectorRegistry:
    if registry is not None and use_global:
        raise TelemetryConfigError("give either registry= or use_global_registry=True, not both")
    return GLOBAL_REGISTRY if use_global else registry or CollectorRegistry()


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
        push_instance: str | None = None,
        run_id: str | None = None,
        first_scrape_wait_s: float = 0.0,
        sources: Mapping[str, str] | None = None,
    ) -> None:
        names = {**_ARG_NAMES, **(sources or {})}
        self.first_scrape_wait_s = parse_seconds(first_scrape_wait_s, names["metrics_wait_s"])
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
        self.push_instance = push_instance or default_push_instance()
        self.run_id = run_id
        self.known_exporters = m.KNOWN_EXPORTERS + (("pushgateway",) if pushgateway_url else ())
        self.registry = _choose_registry(registry, use_global_registry)
        self.scrapes = Scrapers()
        self._finished = False
        self._closed = False
        self._collectors: list[Collector] = []
        self._push_lock = threading.Lock()
        self._stop = threading.Event()
        self._push_thread: threading.Thread | None = None
        self._server: Any = None
        # The adapter label: the values announced (a sweep's adapters, else the run's own)
        # and the current run's value; ``sweep_total`` is 0 outside a sweep.
        self._adapters: frozenset[str] = frozenset()
        self._adapter = m.OTHER_ADAPTER
        self._sweep_total = 0
        self._sweep_done = 0
        try:
            self._register_metrics()
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

    def _bound_health(self) -> TelemetryHealth | None:
        return getattr(self, "health", None)

    # -- metrics -------------------------------------------------------------------------

    def _add(self, metric: _M) -> _M:
        self._collectors.append(metric)
        return metric

    def _register_metrics(self) -> None:
        r = self.registry
        self.lookups = LookupMetrics(r, self._add)
        health = HealthMetrics(self._bound_health, self.known_exporters)
        r.register(health)
        self._collectors.append(health)
        self.probe_durations = self._add(
            Gauge(m.PROBE_DURATION, m.HELP[m.PROBE_DURATION], m.PROBE_LABELS, registry=r)
        )
        self.probes = self._add(Counter(m.PROBES, m.HELP[m.PROBES], ("status",), registry=r))
        self.probe_score = self._add(
            Gauge(m.PROBE_SCORE, m.HELP[m.PROBE_SCORE], m.PROBE_SCORE_LABELS, registry=r)
        )
        self.sweep_progress = self._add(
            Gauge(m.SWEEP_PROGRESS, m.HELP[m.SWEEP_PROGRESS], registry=r)
        )
        self.run_info = self._add(
            Gauge(m.RUN_INFO, m.HELP[m.RUN_INFO], m.RUN_INFO_LABELS, registry=r)
        )
        self.run_active = self._add(Gauge(m.RUN_ACTIVE, m.HELP[m.RUN_ACTIVE], registry=r))
        self.run_progress = self._add(Gauge(m.RUN_PROGRESS, m.HELP[m.RUN_PROGRESS], registry=r))
        self.run_start_time = self._add(Gauge(
            m.RUN_START_TIME, m.HELP[m.RUN_START_TIME], unit="seconds", registry=r))
        # Series of bounded, known label values exist (at 0) before the first event.
        for status in PROBE_STATUSES:
            self.probes.labels(status)
        self.workers = WorkerMetrics(self.registry, self._add)

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
                self.lookups.hit(event)  # type: ignore[arg-type]
        elif kind is ForwardCall:
            self.lookups.forward(event)  # type: ignore[arg-type]
        elif kind is DiskCacheState:
            self.lookups.disk(event)  # type: ignore[arg-type]
        elif kind is ProbeEnded:
            self._on_probe_ended(event)  # type: ignore[arg-type]
        elif kind is RunStarted:
            self._on_run_started(event)  # type: ignore[arg-type]
        elif kind is RunEnded:
            self.run_active.set(0)
            if event.status == "interrupted":  # type: ignore[union-attr]
                self.linger_s = 0.0  # the user stopped the run: do not hold the process
            if self._sweep_total:
                self._sweep_done += 1
                self.sweep_progress.set(min(1.0, self._sweep_done / self._sweep_total))
        elif kind is SweepStarted:
            self._on_sweep_started(event)  # type: ignore[arg-type]
        elif kind is SweepEnded:
            self._sweep_total = 0
        elif kind in WORKER_EVENTS:
            self.workers.export(event)

    def _on_sweep_started(self, ev: SweepStarted) -> None:
        """The sweep's adapters are every value the ``adapter`` label takes until it ends;
        their scores stay side by side (a plain run shows its own only)."""
        self._adapters = frozenset(ev.adapters)
        self._sweep_total = len(ev.adapters)
        self._sweep_done = 0
        self.probe_score.clear()
        self.sweep_progress.set(0)

    def _on_probe_ended(self, ev: ProbeEnded) -> None:
        if ev.status == "not_run":
            return  # stopped mid-probe: no verdict to count
        # µs: shorter scrapes
        self.probe_durations.labels(ev.probe, ev.status).set(round(ev.duration_s, 6))
        self.probes.labels(ev.status).inc()
        if ev.score is not None and math.isfinite(ev.score):
            self.probe_score.labels(ev.probe, self._adapter).set(ev.score)
        if ev.total > 0:
            self.run_progress.set(min(1.0, ev.done / ev.total))

    def _on_run_started(self, ev: RunStarted) -> None:
        self.run_id = ev.run_id
        if not self._sweep_total:
            self._adapters = frozenset((ev.adapter,))
            self.probe_score.clear()
        self._adapter = ev.adapter if ev.adapter in self._adapters else m.OTHER_ADAPTER
        self.run_info.clear()
        self.probe_durations.clear()  # one series per probe of the current run
        self.run_info.labels(ev.run_id, ev.suite, ev.base_model, ev.adapter).set(1)
        self.run_active.set(1)
        self.run_progress.set(0)
        self.run_start_time.set(ev.start_ns / 1e9)
        if self._server is not None and self.first_scrape_wait_s > 0:
            self.scrapes.wait_for_next(self.first_scrape_wait_s)

    # -- exposition ----------------------------------------------------------------------

    def _serve(self, port: int, names: Mapping[str, str]) -> None:
        where = f"{self.address}:{port}"
        try:
            server = serve(self.registry, self.address, port, self.scrapes)
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
                    grouping_key={"instance": self.push_instance, "run_id": self.run_id},
                    timeout=self.push_timeout_s,
                )
            except Exception as exc:
                health = self._bound_health()
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
        if self.pushgateway_url is None or self._finished:
            return True
        return self._push()

    def finish(self) -> None:
        """Stop pushing and push the final values once, so that a failure of that last push
        is counted now (before a run's result is taken); the endpoint, if any, keeps serving
        until :meth:`shutdown`. Idempotent."""
        if self._finished:
            return
        self._finished = True
        self._stop.set()
        if self._push_thread is not None:
            self._push_thread.join(self.push_timeout_s + 1.0)
        self.run_active.set(0)
        self._push()

    def shutdown(self) -> None:
        """:meth:`finish`, then serve until every scraper has seen the final values (see
        :class:`~.server.Scrapers`; with ``linger_s``, also one more scrape, at most
        ``linger_s``), then stop."""
        if self._closed:
            return
        self._closed = True
        self.finish()
        if self._server is not None:
            self.scrapes.wait_for_final(self.linger_s)
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self.registry is GLOBAL_REGISTRY:
            self._unregister()
