"""The metrics endpoint's end of run: every scraper that was scraping gets the final values."""

from __future__ import annotations

import itertools
import threading
import time
import urllib.request

from swayscope.instrumentation import BackendInstrumentation
from swayscope.instrumentation.exporters.prometheus import PrometheusExporter
from swayscope.instrumentation.exporters.prometheus.server import Scrapers


def _scraper(scrapers: Scrapers, who: str, every_s: float, stop: threading.Event,
             seen: list[float], timeout_s: float | None = None, takes_s: float = 0.0) -> None:
    while not stop.is_set():
        scrape = scrapers.scrape_started(who, timeout_s)
        time.sleep(takes_s)
        scrapers.scrape_done(scrape)
        seen.append(time.monotonic())
        stop.wait(every_s)


def _start(*args: object) -> threading.Thread:
    thread = threading.Thread(target=_scraper, args=args, daemon=True)
    thread.start()
    return thread


def test_the_end_serves_the_final_values_for_two_intervals_of_the_slowest_scraper() -> None:
    scrapers = Scrapers()
    stop = threading.Event()
    fast: list[float] = []
    slow: list[float] = []
    threads = [
        _start(scrapers, "127.0.0.1 curl/8", 0.02, stop, fast),
        _start(scrapers, "127.0.0.1 Prometheus/2.42.0", 0.4, stop, slow),
    ]
    time.sleep(1.0)  # both scrape a few times: their intervals are known
    t0 = time.monotonic()
    assert scrapers.wait_for_final(0.0)
    waited = time.monotonic() - t0
    stop.set()
    for thread in threads:
        thread.join(5)
    assert sum(t >= t0 for t in slow) >= 2, "the slow scraper did not scrape twice meanwhile"
    assert 2 * 0.4 < waited < 2 * 0.4 + 1.0 + 0.5  # two of its intervals (+1 s), no more


def test_two_scrapers_of_one_address_and_user_agent_both_get_the_final_values() -> None:
    """Two Prometheus servers on one host (an HA pair: same address, same User-Agent) look
    like one scraper. The first one's scrape of the final values ended the wait, and the
    other one's last sample stayed from the run (run_active 1: a false stall alert)."""
    scrapers = Scrapers()
    stop = threading.Event()
    first: list[float] = []
    second: list[float] = []
    who = "127.0.0.1 Prometheus/2.42.0"
    threads = [_start(scrapers, who, 0.5, stop, first, 0.45)]
    time.sleep(0.1)  # the second one scrapes 0.1 s after the first, at the same interval
    threads.append(_start(scrapers, who, 0.5, stop, second, 0.45))
    time.sleep(1.6)
    t0 = time.monotonic()
    assert scrapers.wait_for_final(0.0)
    stop.set()
    for thread in threads:
        thread.join(5)
    assert any(t >= t0 for t in first) and any(t >= t0 for t in second)


def test_a_scraper_that_went_away_is_waited_for_at_most_twice_its_interval() -> None:
    scrapers = Scrapers()
    for _ in range(3):
        scrapers.scrape_done(scrapers.scrape_started("gone", None))
        time.sleep(0.1)
    t0 = time.monotonic()
    assert not scrapers.wait_for_final(0.0)
    assert 0.1 < time.monotonic() - t0 < 2 * 0.1 + 1.0 + 0.5


def test_nobody_scraping_ends_at_once_without_linger() -> None:
    t0 = time.monotonic()
    assert Scrapers().wait_for_final(0.0)
    assert time.monotonic() - t0 < 0.1


def test_a_scrape_slower_than_the_scrapers_timeout_does_not_count() -> None:
    """Prometheus discards a scrape that took longer than its scrape timeout: that scrape
    did not deliver the final values, the next one (in time) does."""
    scrapers = Scrapers()
    for _ in range(2):
        scrapers.scrape_done(scrapers.scrape_started("prom", 0.05))
        time.sleep(0.1)
    done = threading.Event()

    def final_scrapes() -> None:
        time.sleep(0.05)
        slow = scrapers.scrape_started("prom", 0.05)
        time.sleep(0.15)  # past its 50 ms timeout
        scrapers.scrape_done(slow)
        time.sleep(0.2)
        scrapers.scrape_done(scrapers.scrape_started("prom", 0.05))
        done.set()

    thread = threading.Thread(target=final_scrapes)
    thread.start()
    assert scrapers.wait_for_final(0.0)
    assert done.is_set()
    thread.join(5)


def test_the_exporter_waits_for_its_http_scraper() -> None:
    prom = PrometheusExporter(port=0)
    inst = BackendInstrumentation(exporters=[prom])
    assert prom.url is not None
    stop = threading.Event()
    bodies: list[tuple[float, str]] = []

    def scrape_loop() -> None:
        req = urllib.request.Request(str(prom.url), headers={"User-Agent": "loop"})
        while not stop.is_set():
            # Stamped when asked: on a loaded machine a body made while the run was live
            # may be read only after it ended.
            asked = time.monotonic()
            try:
                with urllib.request.urlopen(req, timeout=2) as resp:
                    bodies.append((asked, resp.read().decode()))
            except OSError:
                return
            stop.wait(0.3)

    loop = threading.Thread(target=scrape_loop)
    loop.start()
    with inst.run(suite="s"), inst.view("ft"):
        time.sleep(1.0)
        inst.cached("next_token_dist", "ft", "p", 8, lambda: 1.0)
    t0 = time.monotonic()
    inst.close()  # no linger: serves the final values for two of the loop's intervals
    waited = time.monotonic() - t0
    stop.set()
    loop.join(5)
    after = [body for at, body in bodies if at >= t0]
    assert after and "swayscope_run_active 0.0" in after[0]
    assert 'swayscope_forward_calls_total{op="next_token_dist",view_kind="ft"} 1.0' in after[0]
    before = [at for at, _ in bodies if at < t0]
    interval = max([b - a for a, b in itertools.pairwise(before)][-8:])
    assert waited < 2 * interval + 1.0 + 0.5  # its slowest recent interval (a loaded machine)


def test_two_http_scrape_loops_of_one_identity_both_get_the_final_values() -> None:
    prom = PrometheusExporter(port=0)
    inst = BackendInstrumentation(exporters=[prom])
    assert prom.url is not None
    stop = threading.Event()
    headers = {"User-Agent": "Prometheus/2.42.0", "X-Prometheus-Scrape-Timeout-Seconds": "0.4"}
    bodies: list[list[tuple[float, str]]] = [[], []]

    def scrape_loop(out: list[tuple[float, str]]) -> None:
        req = urllib.request.Request(str(prom.url), headers=headers)
        while not stop.is_set():
            try:
                with urllib.request.urlopen(req, timeout=2) as resp:
                    out.append((time.monotonic(), resp.read().decode()))
            except OSError:
                return
            stop.wait(0.5)

    loops = [threading.Thread(target=scrape_loop, args=(out,)) for out in bodies]
    with inst.run(suite="s"), inst.view("ft"):
        loops[0].start()
        time.sleep(0.15)
        loops[1].start()
        time.sleep(1.6)
        inst.cached("next_token_dist", "ft", "p", 8, lambda: 1.0)
    t0 = time.monotonic()
    inst.close()
    stop.set()
    for loop in loops:
        loop.join(5)
    for out in bodies:
        after = [body for at, body in out if at >= t0]
        assert after and "swayscope_run_active 0.0" in after[0]


def test_a_prometheus_seen_once_is_waited_for_a_curl_seen_once_is_not() -> None:
    """A run shorter than Prometheus' interval: it scraped once (it sends its scrape
    timeout, so it is periodic) and will come back; a one-off curl will not."""
    scrapers = Scrapers()
    scrapers.scrape_done(scrapers.scrape_started("curl", None))
    scrapers.scrape_done(scrapers.scrape_started("prometheus", 0.4))

    def prometheus_comes_back() -> None:
        time.sleep(0.5)
        scrapers.scrape_done(scrapers.scrape_started("prometheus", 0.4))

    thread = threading.Thread(target=prometheus_comes_back)
    thread.start()
    t0 = time.monotonic()
    assert scrapers.wait_for_final(0.0)
    # Until it came back, then two of its intervals (0.5 s) from the end.
    assert 2 * 0.5 < time.monotonic() - t0 < 2 * 0.5 + 1.0 + 0.5
    thread.join(5)


def test_a_scrape_not_delivered_whole_does_not_count() -> None:
    """The client went away mid-response: it does not have the final values."""
    scrapers = Scrapers()
    for _ in range(2):
        scrapers.scrape_done(scrapers.scrape_started("prom", None))
        time.sleep(0.1)

    def final_scrapes() -> None:
        time.sleep(0.05)
        scrapers.scrape_done(scrapers.scrape_started("prom", None), delivered=False)
        time.sleep(0.2)
        scrapers.scrape_done(scrapers.scrape_started("prom", None))

    thread = threading.Thread(target=final_scrapes)
    thread.start()
    t0 = time.monotonic()
    assert scrapers.wait_for_final(0.0)
    assert time.monotonic() - t0 > 0.2
    thread.join(5)


def test_every_response_says_its_length_so_a_cut_one_is_an_error_not_a_shorter_exposition() -> None:
    """A scrape cut short by the process exiting must fail at the scraper; without a length
    (HTTP/1.0, body until close) it would parse as an exposition missing the later series."""
    import gzip

    from prometheus_client import CollectorRegistry, Counter

    from swayscope.instrumentation.exporters.prometheus.server import serve

    registry = CollectorRegistry()
    Counter("swayscope_test_total", "test", registry=registry).inc()
    server = serve(registry, "127.0.0.1", 0, Scrapers())
    url = f"http://127.0.0.1:{server.server_address[1]}/metrics"
    try:
        for headers in ({}, {"Accept-Encoding": "gzip"},
                        {"Accept": "application/openmetrics-text; version=1.0.0"}):
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers)) as resp:
                body = resp.read()
                assert resp.headers.get_all("Content-Length") == [str(len(body))], headers
            if headers.get("Accept-Encoding") == "gzip":
                body = gzip.decompress(body)
            assert b"swayscope_test_total 1.0" in body
    finally:
        server.shutdown()
        server.server_close()
