"""The ``swayscope`` Typer app, its global options and the process entry point."""

from __future__ import annotations

import logging
import os
import sys
from typing import Annotated

import typer

from swayscope import __version__
from swayscope.backends.threads import prefer_passive_wait
from swayscope.text_safety import escape_control_chars

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Did the LoRA adapter really change the model? Differential probes, observable.",
)
trace_app = typer.Typer(no_args_is_help=True, help="Read JSONL forward-pass traces.")
app.add_typer(trace_app, name="trace")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"swayscope {__version__}")
        raise typer.Exit(0)


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for handler in logging.getLogger().handlers:
        handler.addFilter(_no_control_chars)
    for noisy in ("httpx", "urllib3", "filelock", "opentelemetry"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _no_control_chars(record: logging.LogRecord) -> bool:
    """Log lines carry names from specs and trace files: escape what could forge a line or
    drive the terminal (the message only; DEBUG tracebacks keep their lines)."""
    message = record.getMessage()
    safe = escape_control_chars(message)
    if safe is not message:
        record.msg, record.args = safe, None
    return True


def main() -> None:
    """The ``swayscope`` command.

    Once a command has loaded the ML stack, the process ends without the
    interpreter's teardown, which frees a model's tensors and thousands of modules
    one by one (seconds, for nothing: the OS reclaims the memory at once). By then
    every output was written and closed, and every exporter flushed and shut down
    by the command itself; logging and stdio are flushed here.

    OpenMP's threads are made to sleep, not spin, while they wait (before anything
    loads torch): see :mod:`swayscope.backends.threads`.
    """
    prefer_passive_wait()
    try:
        app()
    except SystemExit as exc:
        code = exc.code
        if "torch" not in sys.modules or not (code is None or isinstance(code, int)):
            raise
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code or 0)

