"""Prometheus exporter: the ``swayscope_*`` metrics, served over HTTP and/or pushed.

Names and labels are a public contract (dashboards and alert rules use them):

========================================  =========  ===================
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
