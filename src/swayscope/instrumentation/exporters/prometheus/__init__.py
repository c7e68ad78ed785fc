"""Prometheus exporter: the ``swayscope_*`` metrics, served over HTTP and/or pushed.

Names and labels are a public contract (dashboards and alert rules use them):

====================================  =========  ==========================
metric                                type       labels
====================================  =========  ==========================
swayscope_cache_hits_total            counter    op, view_kind
swayscope_cache_misses_total          counter    op, view_kind
swayscope_forward_calls_total         counter    op, view_kind
swayscope_forward_prompts_total       counter    op, view_kind
swayscope_batch_size                  histogram  op
swayscope_forward_duration_seconds    histogram  op, view_kind (exemplar: trace_id, span_id)
swayscope_cache_entries               gauge
swayscope_cache_bytes                 gauge
swayscope_cache_evictions_total       counter
swayscope_tokens_total                counter    view_kind
swayscope_generated_tokens_total      counter    view_kind
swayscope_probe_duration_seconds      gauge      probe, status (the current run's probes)
swayscope_probes_total                counter    status
swayscope_probe_score                 gauge      probe, adapter
swayscope_sweep_progress_ratio        gauge
swayscope_run_info                    gauge = 1  run_id, suite, base_model, adapter
swayscope_run_active                  gauge
swayscope_run_progress_ratio          gauge
swayscope_run_start_time_seconds      gauge
swayscope_exporter_errors_total       counter    exporter
swayscope_spans_dropped_total         counter
====================================  =========  ==========================

Labels stay bounded: ``view_kind`` is base|ft|scaled|null (|other for a custom
backend's views); ``probe`` (a probe name) is only on the probe-level metrics, so
the series count does not grow with the suite except by one series per finished
probe of the current run (per-probe hit ratios are in the run's result and its
traces); prompt
hashes, exact view ids, seeds and λ values go to traces only. ``adapter`` takes the
values a checkpoint sweep announced at its start (its adapters' labels; outside a sweep,
the run's adapter) and ``other`` for anything else. Misses include
model calls that raised, as ``BackendStats`` counts them, so the PromQL hit ratio
equals ``BackendStats.hit_rate``.

The registry is this exporter's own unless ``use_global_registry``. With a
``port`` the registry is served on ``address`` (127.0.0.1 by default; port 0
picks a free one, see :attr:`PrometheusExporter.port`/``url``), in the
OpenMetrics format, exemplars included, when the scraper asks for it. At
:meth:`shutdown` the endpoint stays up until every scraper that was scraping it
has scraped the final values (each at most twice its own interval, see
:mod:`.server`); with ``linger_s`` also until one more scrape (at most
``linger_s`` seconds), for a scraper not seen yet. With a ``pushgateway_url`` the
registry is pushed every ``push_interval_s`` and at the end of the run, grouped by
job, ``instance`` (``host:pid`` unless ``push_instance`` is given, so pushed
series carry ``job`` and ``instance`` as scraped ones do) and ``run_id``.

Names, help texts and buckets are defined once, in :mod:`.metrics`; the
per-lookup and per-call metrics are prometheus_client's own objects, their
children bound once (:mod:`.lookups`).
"""

from swayscope.instrumentation.exporters.prometheus.exporter import (
    PrometheusExporter,
    default_push_instance,
)
from swayscope.instrumentation.exporters.prometheus.metrics import (
    BATCH_SIZE_BUCKETS,
    FORWARD_DURATION_BUCKETS,
    KNOWN_EXPORTERS,
)
from swayscope.instrumentation.exporters.prometheus.server import FINAL_SCRAPE_WAIT_MAX_S
from swayscope.instrumentation.vocabulary import KNOWN_OPS

__all__ = [
    "BATCH_SIZE_BUCKETS",
    "FINAL_SCRAPE_WAIT_MAX_S",
    "FORWARD_DURATION_BUCKETS",
    "KNOWN_EXPORTERS",
    "KNOWN_OPS",
    "PrometheusExporter",
    "default_push_instance",
]
