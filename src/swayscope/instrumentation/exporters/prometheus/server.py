"""The metrics endpoint: prometheus_client's WSGI app behind a server that knows its scrapers.

Each scraper (client address and User-Agent: a Prometheus, a curl loop) is remembered
with its cadence: the longest of its recent intervals, and for a Prometheus (it sends
its scrape timeout with each scrape) at least that timeout, which Prometheus keeps
below its interval. When the run ends, the endpoint serves the final values for two
such intervals of every scraper that was scraping (at most
:data:`FINAL_SCRAPE_WAIT_MAX_S`), whoever scraped meanwhile: two Prometheus servers on
one host (an HA pair) share an address and a User-Agent, and each gets a scrape of
the final values in that time, since each scrapes once per interval and the longest
gap between their scrapes is at least half of it. A Prometheus seen only once has an
interval longer than it has been scraping: it is waited for until it scrapes again
(then as above), at most until its first scrape plus :data:`FINAL_SCRAPE_WAIT_MAX_S`.
Anything else seen once (a curl) is not waited for.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

#: Longest the end of a run serves the final values for one scraper, however slow its
#: cadence.
FINAL_SCRAPE_WAIT_MAX_S = 60.0
#: Slack on top of twice a scraper's interval (scheduling jitter, a slow scrape).
_SLACK_S = 1.0
#: How many of a scraper's latest intervals its cadence is taken from.
_RECENT = 8

_WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


@dataclass(slots=True)
class _Scraper:
    first_start: float
    last_start: float
    gaps: deque[float] = field(default_factory=lambda: deque(maxlen=_RECENT))
    """Its latest intervals: two scrapers of one identity alternate short and long ones."""
    timeouts: deque[float] = field(default_factory=lambda: deque(maxlen=_RECENT))
    """The scrape timeouts it sent (Prometheus does: it scrapes periodically)."""

    @property
    def interval(self) -> float | None:
        """Its cadence: the longest recent interval, at least its longest recent timeout
        (None: seen once)."""
        return max([*self.gaps, *self.timeouts]) if self.gaps else None


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
        self._in_flight = 0
        self._final_at: float | None = None
        self._saw_final: set[str] = set()

    def scrape_started(self, who: str, timeout_s: float | None = None) -> _Scrape:
        """Called as a scrape begins; ``timeout_s`` is the scraper's own limit, if it said."""
        now = time.monotonic()
        with self._cond:
            known = self._scrapers.get(who)
            if known is None:
                known = self._scrapers[who] = _Scraper(now, now)
            else:
                known.gaps.append(now - known.last_start)
                known.last_start = now
            if timeout_s is not None:
                known.timeouts.append(timeout_s)
            self._in_flight += 1
            return _Scrape(who, self._generation, now, timeout_s)

    def scrape_done(self, scrape: _Scrape, delivered: bool = True) -> None:
        """A scrape was answered (``delivered``: all of it was written). One that took
        longer than the scraper's timeout was discarded by it: like one that was not
        delivered, it does not count as having seen the final values."""
        done = time.monotonic()
        with self._cond:
            self._in_flight -= 1
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
        """The values are final from now on. Serve them for twice the interval of every
        scraper that was scraping (each at most :data:`FINAL_SCRAPE_WAIT_MAX_S`), and with
        ``linger_s`` until at least one scrape has had them (at most ``linger_s``); then
        until the scrapes under way are answered (at most one more second). True when
        every scraper waited for (and, with ``linger_s``, someone) had the final values."""
        with self._cond:
            final_at = self._final_at = time.monotonic()
            waited = [who for who, s in self._scrapers.items() if _scraping(s, final_at)]
            linger_until = final_at + linger_s if linger_s > 0 else None

            def until() -> float:
                ends = [_served_until(self._scrapers[who], final_at) for who in waited]
                if linger_until is not None and not self._saw_final:
                    ends.append(linger_until)
                return max(ends, default=final_at)

            while (left := until() - time.monotonic()) > 0:
                self._cond.wait(left)
            self._cond.wait_for(lambda: self._in_flight == 0, timeout=_SLACK_S)
            seen = all(who in self._saw_final for who in waited)
            return seen and (linger_until is None or bool(self._saw_final))


def _scraping(scraper: _Scraper, now: float) -> bool:
    """Whether ``scraper`` was still scraping when the run ended (a curl seen once: no)."""
    interval = scraper.interval
    if interval is None:
        return bool(scraper.timeouts) and now < _first_wait_end(scraper)
    return now - scraper.last_start <= 3 * interval + _SLACK_S


def _first_wait_end(scraper: _Scraper) -> float:
    """How long a periodic scraper seen once is waited for to come back."""
    return scraper.first_start + FINAL_SCRAPE_WAIT_MAX_S + _SLACK_S


def _served_until(scraper: _Scraper, final_at: float) -> float:
    """Until when the final values are served for ``scraper``."""
    interval = scraper.interval
    if interval is None:  # seen once: until it comes back (its interval is known then)
        return _first_wait_end(scraper)
    return final_at + min(2 * interval + _SLACK_S, FINAL_SCRAPE_WAIT_MAX_S)


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
