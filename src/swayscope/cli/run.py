"""``swayscope run``: a suite of probes, base vs fine-tuned, with live telemetry."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from swayscope.cli.app import app
from swayscope.cli.execute import execute, guarded
from swayscope.cli.flags import (
    JsonOpt,
    MarkdownOpt,
    OptionalValueCommand,
    StrictOpt,
    run_flags,
    telemetry_flags,
    worker_flags,
)


@app.command(cls=OptionalValueCommand)
@telemetry_flags
@run_flags
@worker_flags
def run(
    spec: Annotated[Path, typer.Argument(help="Suite spec (YAML).")],
    json_out: JsonOpt = None,
    markdown_out: MarkdownOpt = None,
    strict: StrictOpt = False,
    *,
    flags: dict[str, Any],
    run_flags: dict[str, Any],
    worker_flags: dict[str, Any],
) -> None:
    """Run a suite of probes: base vs fine-tuned, with live telemetry."""
    guarded(
        execute, spec, None, flags=flags, json_out=json_out, markdown_out=markdown_out,
        run_flags=run_flags, worker_flags=worker_flags, strict=strict,
    )
