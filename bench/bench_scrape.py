"""Size and serving time of one Prometheus scrape, by the number of probes in the suite.

A run with N probes (named like a spec's labels, ``delta_kl_017``) is driven through
the Python API: every probe looks prompts up in every op and view kind (so every
series has a value) and finishes; OpenTelemetry is on (in-memory spans), so the
forward-duration buckets carry exemplars as in a traced run. Then the metrics
endpoint is scraped over HTTP as Prometheus scrapes it (OpenMetrics) and as curl does
(text format), uncompressed, and with gzip as Prometheus asks for it.

    python bench/bench_scrape.py [--probes 5 500] [--repeats 30]

Prints, per suite size: series (samples) per scrape, bytes, and the time from request
to last byte (best and median of the repeats).
"""

from __future__ import annotations

import argparse
import gzip
import statistics
import time
import urllib.request

from machine import cpu_model
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from swayscope.instrumentation import BackendInstrumentation
from swayscope.instrumentation.exporters.otel import OtelExporter
from swayscope.instrumentation.exporters.prometheus import PrometheusExporter
from swayscope.instrumentation.vocabulary import KNOWN_OPS

OPENMETRICS = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
VIEWS = ("base", "ft", "scaled_1.5", "null_3_i1.0_r1.0")
KINDS = ("delta_kl", "adapter_ablation", "null_adapter", "prompt_collapse", "perplexity_shift")


def run_suite(inst: BackendInstrumentation, n_probes: int) -> None:
    names = [f"{KINDS[i % len(KINDS)]}_{i:03d}" for i in range(n_probes)]
    with inst.run(suite="bench", base_model="base", adapter="lora", probes=names):
        for i, name in enumerate(names):
            with inst.probe(name, KINDS[i % len(KINDS)]) as probe:
                for view in VIEWS:
                    with inst.view(view):
                        for op in KNOWN_OPS:
                            for p in range(3):  # a miss, then hits
                                inst.cached(op, view, f"prompt {i % 7} {p % 2}", 8, lambda: 1.0)
                probe.status = "pass"


def scrape(url: str, accept: str | None, gzipped: bool) -> tuple[float, bytes]:
    headers = {"Accept": accept} if accept else {}
    if gzipped:
        headers["Accept-Encoding"] = "gzip"
    t0 = time.perf_counter()
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as r:
        body = r.read()
    return time.perf_counter() - t0, body


def series(text: str) -> int:
    return sum(1 for line in text.splitlines() if line and not line.startswith("#"))


def serving(n_probes: int) -> tuple[BackendInstrumentation, str]:
    """An instrumentation whose run of ``n_probes`` probes is over, its metrics URL."""
    prom = PrometheusExporter(port=0)
    otel = OtelExporter(span_exporter=InMemorySpanExporter(), batch=False)
    inst = BackendInstrumentation(exporters=[prom, otel], cache_maxsize=1 << 16)
    run_suite(inst, n_probes)
    assert prom.url is not None
    return inst, prom.url


def scrape_once(n_probes: int) -> int:
    """Series in one scrape (OpenMetrics) after a run of ``n_probes`` probes."""
    inst, url = serving(n_probes)
    try:
        return series(scrape(url, OPENMETRICS, False)[1].decode())
    finally:
        inst.close()


def scrape_families(n_probes: int) -> dict[str, tuple[tuple[str, ...], int]]:
    """Each metric family of one scrape after a run of ``n_probes`` probes: the labels its
    series vary by (a histogram's ``le`` left out) and its series (samples)."""
    from prometheus_client.openmetrics.parser import text_string_to_metric_families

    inst, url = serving(n_probes)
    try:
        text = scrape(url, OPENMETRICS, False)[1].decode()
    finally:
        inst.close()
    out = {}
    for family in text_string_to_metric_families(text):
        labels = sorted({k for s in family.samples for k in s.labels} - {"le"})
        name = family.name + ("_total" if family.type == "counter" else "")
        out[name] = (tuple(labels), len(family.samples))
    assert sum(n for _, n in out.values()) == series(text)
    return out


def measure(n_probes: int, repeats: int) -> None:
    inst, url = serving(n_probes)
    for label, accept, gzipped in (
        ("OpenMetrics (Prometheus)", OPENMETRICS, False),
        ("OpenMetrics, gzip", OPENMETRICS, True),
        ("text (curl)", None, False),
    ):
        scrape(url, accept, gzipped)  # warm-up
        times, body = [], b""
        for _ in range(repeats):
            seconds, body = scrape(url, accept, gzipped)
            times.append(seconds * 1000)
        text = (gzip.decompress(body) if gzipped else body).decode()
        print(
            f"{n_probes:6d} probes  {label:26} {series(text):6d} series  {len(body):8d} bytes"
            f"  best {min(times):6.2f} ms  median {statistics.median(times):6.2f} ms"
        )
    inst.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probes", type=int, nargs="+", default=[5, 500])
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    print(f"machine: {cpu_model()}; {args.repeats} scrapes each after one warm-up")
    for n in args.probes:
        measure(n, args.repeats)


if __name__ == "__main__":
    main()
