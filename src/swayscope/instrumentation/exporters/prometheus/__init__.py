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

Names, help texts and buckets are defined once, in :mod:`.metrics`; the
per-event metrics live in :mod:`.hot` as plain numbers until a scrape.
"""

from swayscope.instrumentation.exporters.prometheus.exporter import PrometheusExporter
from swayscope.instrumentation.exporters.prometheus.metrics import (
    BATCH_SIZE_BUCKETS,
    FORWARD_DURATION_BUCKETS,
    KNOWN_EXPORTERS,
    NO_PROBE,
    PROBE_DURATION_BUCKETS,
)
from swayscope.instrumentation.vocabulary import KNOWN_OPS

__all__ = [
    "BATCH_SIZE_BUCKETS",
    "FORWARD_DURATION_BUCKETS",
    "KNOWN_EXPORTERS",
    "KNOWN_OPS",
    "NO_PROBE",
    "PROBE_DURATION_BUCKETS",
    "PrometheusExporter",
]
