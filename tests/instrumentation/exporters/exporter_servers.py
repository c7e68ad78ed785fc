"""Helpers for the exporter tests: free ports, bounded waits, server processes, rotel output.

Imported by ``conftest.py`` (fixtures) and by the tests; a unique module name so it never
collides with another directory's ``conftest``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sway_testing import missing


def need_binary(name: str, *candidates: Path) -> str:
    """Path of a server binary; skip (locally) or fail (CI) when it is missing."""
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return str(c)
    found = shutil.which(name)
    if found:
        return found
    missing(
        f"{name} not found on PATH (install it: see .ci/run); the real-server test cannot run",
        "the server tests",
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(pred: Callable[[], Any], timeout_s: float, interval_s: float = 0.1) -> Any:
    """Poll ``pred`` until it returns something truthy; bounded in time and tries."""
    deadline = time.monotonic() + timeout_s
    result: Any = None
    for _ in range(int(timeout_s / interval_s) + 2):
        try:
            result = pred()
        except AssertionError:
            raise
        except Exception:
            result = None
        if result or time.monotonic() > deadline:
            return result
        time.sleep(interval_s)
    return result


def http_get(url: str, accept: str | None = None, timeout_s: float = 2.0) -> tuple[int, str]:
    req = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(req, timeout=timeout_s) as resp:
        return resp.status, resp.read().decode("utf-8")


@dataclass
class ServerProcess:
    """A started server; ``stop()`` terminates it and waits (kills after 5 s)."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)




def ready(server: ServerProcess, url: str, timeout_s: float) -> None:
    def ok() -> bool:
        if server.proc.poll() is not None:
            raise AssertionError("exited")
        return http_get(url, timeout_s=1.0)[0] == 200

    try:
        ready = wait_for(ok, timeout_s)
    except AssertionError:
        ready = False
    if not ready:
        raise AssertionError(
            f"{server.name} did not become ready at {url} within {timeout_s} s "
            f"(exit code {server.proc.poll()}):\n{server.output()[-2000:]}"
        )


# -- Prometheus ------------------------------------------------------------------------------


@dataclass
class PrometheusServer:
    url: str
    process: ServerProcess

    def query(self, expr: str) -> list[dict[str, Any]]:
        q = urllib.parse.urlencode({"query": expr})
        _, body = http_get(f"{self.url}/api/v1/query?{q}")
        data = json.loads(body)
        assert data["status"] == "success", data
        return list(data["data"]["result"])

    def scalar(self, expr: str) -> float | None:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None






# -- rotel (OTLP receiver) -------------------------------------------------------------------


@dataclass
class ReceivedEvent:
    name: str
    attributes: dict[str, str] = field(default_factory=dict)


@dataclass
class ReceivedLink:
    trace_id: str
    span_id: str
    attributes: dict[str, str] = field(default_factory=dict)


@dataclass
class ReceivedSpan:
    trace_id: str
    span_id: str
    parent_id: str
    name: str
    kind: str
    status: str
    service: str
    attributes: dict[str, str] = field(default_factory=dict)
    status_message: str = ""
    events: list[ReceivedEvent] = field(default_factory=list)
    links: list[ReceivedLink] = field(default_factory=list)


_FIELD = re.compile(
    r"^\s*(Trace ID|Parent ID|ID|Name|Kind|Status code|Status message)\s*:\s*(.*?)\s*$"
)
_ATTR = re.compile(r"^\s*->\s*([^:]+):\s*\w+\((.*)\)\s*$", re.DOTALL)
_ATTR_START = re.compile(r"^\s*->\s*[^:]+:\s*\w+\(")
_HEADERS = (
    "ResourceSpans", "Resource ", "ScopeSpans", "InstrumentationScope", "Span #", "Start time",
    "End time", "Attributes:", "Events:", "SpanEvent #", "Links:", "SpanLink #", "\x1b[",
)


def _logical_lines(text: str) -> list[str]:
    """rotel's lines, a multi-line attribute value (a stack trace) joined back into one."""
    out: list[str] = []
    open_value = False
    for line in text.splitlines():
        structural = line.lstrip().startswith("->") or line.startswith(_HEADERS) or bool(
            _FIELD.match(line)
        )
        if open_value and not structural:
            out[-1] += "\n" + line
            continue
        out.append(line)
        open_value = bool(_ATTR_START.match(line)) and not _ATTR.match(line)
    for i, line in enumerate(out):
        if "\n" in line and not _ATTR.match(line):
            out[i] = line + ")"  # a value cut short by the next structural line
    return out


def parse_rotel_debug(text: str) -> list[ReceivedSpan]:
    """Spans, with their events and links, from rotel's ``--debug-log traces
    --debug-log-verbosity detailed`` output."""
    spans: list[ReceivedSpan] = []
    service = ""
    section = ""
    for line in _logical_lines(text):
        if line.startswith("ResourceSpans"):
            service, section = "", "resource"
            continue
        if line.startswith("Span #"):
            spans.append(ReceivedSpan("", "", "", "", "", "", service))
            section = "span"
            continue
        if not spans and section != "resource":
            continue
        span = spans[-1] if spans else None
        if line.startswith("Attributes:") and section.startswith("span"):
            section = "span-attrs"
            continue
        if line.startswith("SpanEvent #") and span is not None:
            span.events.append(ReceivedEvent(""))
            section = "event"
            continue
        if line.startswith("SpanLink #") and span is not None:
            span.links.append(ReceivedLink("", ""))
            section = "link"
            continue
        m = _ATTR.match(line)
        if m:
            key, value = m.group(1).strip(), m.group(2)
            if section == "resource" and key == "service.name":
                service = value
            elif section == "span-attrs" and span is not None:
                span.attributes[key] = value
            elif section == "event" and span is not None:
                span.events[-1].attributes[key] = value
            elif section == "link" and span is not None:
                span.links[-1].attributes[key] = value
            continue
        if section in ("event", "link") and span is not None:
            key, _, value = line.strip().removeprefix("->").strip().partition(":")
            value = value.strip()
            if section == "event" and key == "Name":
                span.events[-1].name = value
            elif section == "link" and key == "Trace ID":
                span.links[-1].trace_id = value
            elif section == "link" and key == "ID":
                span.links[-1].span_id = value
            continue
        m = _FIELD.match(line)
        if m and span is not None and section.startswith("span"):
            attr = {
                "Trace ID": "trace_id", "Parent ID": "parent_id", "ID": "span_id",
                "Name": "name", "Kind": "kind", "Status code": "status",
                "Status message": "status_message",
            }[m.group(1)]
            setattr(span, attr, m.group(2))
    return spans


@dataclass
class RotelAgent:
    http_endpoint: str
    grpc_endpoint: str
    process: ServerProcess

    def spans(self, trace_id: str | None = None) -> list[ReceivedSpan]:
        spans = parse_rotel_debug(self.process.output())
        return [s for s in spans if trace_id is None or s.trace_id == trace_id]


def traces_of_run(spans: list[ReceivedSpan], run_id: str) -> dict[str, list[ReceivedSpan]]:
    """The received spans of every trace with a span carrying ``run_id``, by trace id."""
    ids = {s.trace_id for s in spans if s.attributes.get("swayscope.run_id") == run_id}
    traces: dict[str, list[ReceivedSpan]] = {t: [] for t in ids}
    for s in spans:
        if s.trace_id in traces:
            traces[s.trace_id].append(s)
    return traces


def rotel_binary() -> str:
    try:
        import rotel
    except ImportError:
        return need_binary("rotel-agent")
    return need_binary("rotel-agent", Path(rotel.__file__).parent / "rotel-agent")
