"""The metrics endpoint: prometheus_client's WSGI app behind a server that knows its scrapers.

Each scraper (client address and User-Agent: a Prometheus, a second Prometheus on
another host, a curl loop) is remembered with its cadence. When the run ends, the
exporter waits until every scraper that was scraping has scraped the final values,
so that each one's last sample is the run's final state; a scraper that does not
come back within twice its interval is not waited for longer. A Prometheus (it sends
its scrape timeout with each scrape) seen only once has an interval longer than it
has been scraping: it is waited for until its first scrape plus
:data:`FINAL_SCRAPE_WAIT_MAX_S`. Anything else seen once (a curl) is not waited for.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

#: Longest the end of a run waits for one scraper's final scrape, however slow its cadence.
FINAL_SCRAPE_WAIT_MAX_S = 60.0
#: Slack on top of twice a scraper's interval (scheduling jitter, a slow scrape).
_SLACK_S = 1.0

_WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


@dataclass(slots=True)
class _Scraper:
    last_start: float
    interval: float | None = None
    #: It sent a scrape timeout (Prometheus does): it scrapes periodically.
    periodic: bool = False


@dataclass(frozen=True, slots=True)
class _Scrape:
    who: str
    generation: int
    started: float
    timeout_s: float | None


class Scrapers:
    """Who scrapes the endpoint and when; the waits at a run's start and end."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._scrapers: dict[str, _Scraper] = {}
        self._generation = 0
        self._scraped_generation = 0
        self._final_at: float | None = None
        self._saw_final: set[str] = set()

    def scrape_started(self, who: str, timeout_s: float | None = None) -> _Scrape:
        """Called as a scrape begins; ``timeout_s`` is the scraper's own limit, if it said."""
        now = time.monotonic()
        with self._cond:
            known = self._scrapers.get(who)
            if known is None:
                self._scrapers[who] = _Scraper(now, periodic=timeout_s is not None)
            else:
                known.interval = now - known.last_start
                known.last_start = now
            return _Scrape(who, self._generation, now, timeout_s)

    def scrape_done(self, scrape: _Scrape, delivered: bool = True) -> None:
        """A scrape was answered (``delivered``: all of it was written). One that took
        longer than the scraper's timeout was discarded by it: like one that was not
        delivered, it does not count as having seen the final values."""
        done = time.monotonic()
        with self._cond:
            self._scraped_generation = max(self._scraped_generation, scrape.generation)
            in_time = scrape.timeout_s is None or done - scrape.started <= scrape.timeout_s
            seen = delivered and in_time
            if self._final_at is not None and scrape.started >= self._final_at and seen:
                self._saw_final.add(scrape.who)
            self._cond.notify_all()

    def wait_for_next(self, timeout_s: float) -> bool:
        """Block until a scrape that began after this call has finished (or timeout)."""
        with self._cond:
            self._generation += 1
            target = self._generation
            return self._cond.wait_for(
                lambda: self._scraped_generation >= target, timeout=timeout_s
            )

    def wait_for_final(self, linger_s: float) -> bool:
        """The values are final from now on. Wait until every scraper that was scraping has
        scraped them (each at most twice its interval), and with ``linger_s`` until at least
        one scrape has (at most ``linger_s``). True when nobody was left waited for."""
        with self._cond:
            now = time.monotonic()
            self._final_at = now
            deadlines = {
                who: deadline
                for who, s in self._scrapers.items()
                if (deadline := _deadline(s, now)) is not None
            }
            linger_until = now + linger_s if linger_s > 0 else None

            def outstanding(at: float) -> list[float]:
                left = [d for who, d in deadlines.items() if who not in self._saw_final]
                if linger_until is not None and not self._saw_final:
                    left.append(linger_until)
                return [d for d in left if d > at]

            while True:
                at = time.monotonic()
                left = outstanding(at)
                if not left:
                    break
                self._cond.wait(min(left) - at)
            seen = all(who in self._saw_final for who in deadlines)
            return seen and (linger_until is None or bool(self._saw_final))


def _deadline(scraper: _Scraper, now: float) -> float | None:
    """Until when to wait for ``scraper``'s scrape of the final values; None: not at all."""
    if scraper.interval is None:
        if not scraper.periodic:
            return None
        deadline = scraper.last_start + FINAL_SCRAPE_WAIT_MAX_S + _SLACK_S
        return deadline if deadline > now else None
    if now - scraper.last_start > 3 * scraper.interval + _SLACK_S:
        return None  # it stopped scraping before the run ended
    return now + min(2 * scraper.interval + _SLACK_S, FINAL_SCRAPE_WAIT_MAX_S)


class _Sent:
    """A response body whose ``close()`` — called by the WSGI server when the response is
    over (PEP 3333) — reports the scrape done, and whether all of it was written (the
    server writes each chunk before it asks for the next). Reporting it earlier would let
    the run end, and the process exit, before the final values reach the scraper."""

    def __init__(self, body: Iterable[bytes], sent: Callable[[bool], None]) -> None:
        self._body = body
        self._sent = sent
        self._complete = False

    def __iter__(self) -> Iterator[bytes]:
        yield from self._body
        self._complete = True

    def close(self) -> None:
        self._sent(self._complete)


def _timeout(environ: dict[str, Any]) -> float | None:
    """The scrape timeout Prometheus sends with each scrape, if any."""
    try:
        return float(environ["HTTP_X_PROMETHEUS_SCRAPE_TIMEOUT_SECONDS"])
    except (KeyError, ValueError):
        return None


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """No access log on stderr: scrapes every few seconds would flood it."""


def serve(
    registry: CollectorRegistry, address: str, port: int, scrapers: Scrapers
) -> WSGIServer:
    """Serve ``registry`` on ``address:port`` (IPv4 or IPv6) in a daemon thread.

    Raises OSError when the address does not resolve or the port cannot be bound.
    """
    metrics = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == "/favicon.ico":
            return metrics(environ, start_response)  # type: ignore[no-any-return]
        who = f"{environ.get('REMOTE_ADDR', '?')} {environ.get('HTTP_USER_AGENT', '')}"
        scrape = scrapers.scrape_started(who, _timeout(environ))
        started: list[Any] = []
        try:
            data = b"".join(metrics(environ, lambda *args: started.extend(args)))
        except BaseException:
            scrapers.scrape_done(scrape, delivered=False)
            raise
        # With its length said, a response cut short (the process exiting mid-scrape) is a
        # failed scrape to the scraper, not a valid exposition missing the series after the cut.
        status, headers, *rest = started
        start_response(status, [*headers, ("Content-Length", str(len(data)))], *rest)
        return _Sent([data], lambda delivered: scrapers.scrape_done(scrape, delivered))

    family, _, _, _, sockaddr = socket.getaddrinfo(
        address, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]

    class Server(ThreadingWSGIServer):
        address_family = family

    httpd: WSGIServer = make_server(
        str(sockaddr[0]), port, app, Server, handler_class=_QuietHandler
    )
    threading.Thread(
        target=httpd.serve_forever, name="swayscope-metrics", daemon=True
    ).start()
    return httpd


__all__ = ["FINAL_SCRAPE_WAIT_MAX_S", "Scrapers", "serve"]
