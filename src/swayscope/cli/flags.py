"""The CLI's settings flags, declared once: each table maps a setting's one name to its flag."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from typer.core import TyperCommand

#: The telemetry settings as flags: setting name → (flag, type, help). Flags live here only;
#: each setting's one name is the field of ``TelemetrySettings`` and the spec's key.
TELEMETRY_FLAGS: dict[str, tuple[str, Any, str]] = {
    "trace": ("--trace", Path | None, "Append a JSONL forward-pass trace to FILE."),
    "otlp_endpoint": (
        "--otlp-endpoint", str | None,
        "Send spans over OTLP to URL (else OTEL_EXPORTER_OTLP_ENDPOINT, if set).",
    ),
    "otlp_protocol": (
        "--otlp-protocol", str | None,
        "grpc or http/protobuf (else OTEL_EXPORTER_OTLP_PROTOCOL; default http/protobuf).",
    ),
    "metrics_port": (
        "--metrics-port", int | None, "Serve Prometheus metrics on this port (0: a free one).",
    ),
    "metrics_address": (
        "--metrics-address", str | None, "Address for the metrics endpoint [127.0.0.1].",
    ),
    "metrics_linger_s": (
        "--metrics-linger", float | None,
        "After the run, also wait up to N seconds for a scraper not seen yet (the endpoint "
        "always waits for the scrapers that were scraping to get the final values).",
    ),
    "metrics_wait_s": (
        "--metrics-wait", float | None,
        "At run start, wait up to N seconds for Prometheus to scrape the zeroed series "
        "(short runs: rate() then sees every increment).",
    ),
    "pushgateway": ("--pushgateway", str | None, "Push metrics to this Pushgateway URL."),
    "capture_prompts": (
        "--capture-prompts", bool | None, "Put prompt text into traces (off: hashes only).",
    ),
}
#: The run settings of a spec's ``defaults:`` block that are also flags, same shape as
#: TELEMETRY_FLAGS; each setting's one name is the ``DefaultsSpec`` field.
RUN_FLAGS: dict[str, tuple[str, Any, str]] = {
    "threads": (
        "--threads", int | None,
        "CPU threads the model computes with (default and most: the CPUs this process may "
        "use).",
    ),
    "cache_dir": (
        "--cache-dir", Path | None,
        "Folder of the durable forward cache (default: $SWAYSCOPE_HOME/cache): what a run "
        "computes is kept there, and a run of the same work, resumed or on a new adapter "
        "of the same base, reads it instead of computing it again.",
    ),
    "disk_cache": (
        "--disk-cache/--no-disk-cache", bool | None,
        "Keep forward passes in the durable disk cache (default: on).",
    ),
}
#: The settings of a spec's ``models.workers:`` block that are also flags, same shape; each
#: setting's one name is the ``WorkersSpec`` field. Either flag alone asks for a pool.
WORKER_FLAGS: dict[str, tuple[str, Any, str]] = {
    "address": (
        "--ray", str | None,
        "Compute on a pool of Ray workers that hold the model (the run keeps the cache): "
        "--ray alone starts a local cluster; --ray ADDRESS joins one (host:port, "
        "ray://host:port or auto).",
    ),
    "count": (
        "--workers", int | None, "Workers in the pool (default: models.workers.count, else 2).",
    ),
}


def _ray_address(arg: str) -> bool:
    """Whether ``arg`` reads as a Ray address (``host:port``, ``ray://…``, ``auto``,
    ``local``), not as the spec path that may follow ``--ray``."""
    return ":" in arg or arg in ("auto", "local")


#: Flags whose value may be left out: the value they then take (``--ray`` alone), and
#: which following word is their value (any other is the command's next argument).
OPTIONAL_VALUES: dict[str, tuple[str, Callable[[str], bool]]] = {"--ray": ("local", _ray_address)}
#: Setting name → its flag, for error messages.
FLAG_OF: dict[str, str] = {name: flag for name, (flag, _, _) in TELEMETRY_FLAGS.items()}
RUN_FLAG_OF: dict[str, str] = {name: flag for name, (flag, _, _) in RUN_FLAGS.items()}
WORKER_FLAG_OF: dict[str, str] = {name: flag for name, (flag, _, _) in WORKER_FLAGS.items()}

F = TypeVar("F", bound=Callable[..., Any])


def _flags_from(table: dict[str, tuple[str, Any, str]], param: str) -> Callable[[F], F]:
    """A decorator adding ``table``'s flags to a command, which receives them as
    ``param={setting: value}``."""

    def decorate(command: F) -> F:
        signature = inspect.signature(command, eval_str=True)
        own = [p for p in signature.parameters.values() if p.name != param]
        added = [
            inspect.Parameter(
                name, inspect.Parameter.KEYWORD_ONLY, default=None,
                annotation=Annotated[kind, typer.Option(flag, help=help_text)],
            )
            for name, (flag, kind, help_text) in table.items()
        ]

        @functools.wraps(command)
        def wrapper(**kwargs: Any) -> Any:
            values = {name: kwargs.pop(name) for name in table}
            return command(**{param: values}, **kwargs)

        params = sorted(own + added, key=lambda p: p.kind)
        wrapper.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in params}
        return wrapper  # type: ignore[return-value]

    return decorate


#: Adds every telemetry flag; the command receives them as ``flags={setting: value}``.
telemetry_flags = _flags_from(TELEMETRY_FLAGS, "flags")
#: Adds every run flag; the command receives them as ``run_flags={setting: value}``.
run_flags = _flags_from(RUN_FLAGS, "run_flags")
#: Adds the pool's flags; the command receives them as ``worker_flags={setting: value}``.
worker_flags = _flags_from(WORKER_FLAGS, "worker_flags")


def with_optional_values(args: list[str]) -> list[str]:
    """``args`` with each flag of :data:`OPTIONAL_VALUES` that has no value (last, or
    followed by a word that is not one) given its default: ``--ray`` alone is
    ``--ray=local``, ``--ray suite.yaml`` is ``--ray=local suite.yaml``."""
    out: list[str] = []
    for i, arg in enumerate(args):
        following = args[i + 1] if i + 1 < len(args) else None
        optional = OPTIONAL_VALUES.get(arg)
        if optional is not None and (following is None or not optional[1](following)):
            out.append(f"{arg}={optional[0]}")
        else:
            out.append(arg)
    return out


class OptionalValueCommand(TyperCommand):
    """A command whose :data:`OPTIONAL_VALUES` flags may be given without a value."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        return super().parse_args(ctx, with_optional_values(args))


JsonOpt = Annotated[
    Path | None, typer.Option("--json", help="Write the SuiteResult JSON to OUT (atomically).")
]
MarkdownOpt = Annotated[
    Path | None, typer.Option("--markdown", help="Write a markdown report to OUT.")
]
StrictOpt = Annotated[
    bool,
    typer.Option(
        "--strict",
        help="Refuse a dlm-sway suite that has entries swayscope cannot run (default: run "
        "the rest, report those as skip with the reason).",
    ),
]
