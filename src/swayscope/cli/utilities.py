"""``swayscope tiny-model`` and ``swayscope trace summarize``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from swayscope.cli.app import app, trace_app
from swayscope.cli.execute import fail, guarded


@app.command("tiny-model")
def tiny_model(
    directory: Annotated[
        Path,
        typer.Argument(help="Folder to write tiny-llama/ (base) and tiny-lora/ (adapter) into."),
    ],
    seed: Annotated[int, typer.Option(help="Seed for weights, tokenizer and adapter.")] = 0,
) -> None:
    """Write the offline tiny Llama model, BPE tokenizer and LoRA adapter to DIRECTORY."""

    def go() -> int:
        from swayscope.backends.tiny import build_tiny

        paths = build_tiny(directory, seed=seed)
        typer.echo(f"base model: {paths.base_dir}\nadapter:    {paths.adapter_dir}")
        return 0

    guarded(go)


@trace_app.command("summarize")
def trace_summarize(
    file: Annotated[Path, typer.Argument(help="JSONL trace file.")],
    run_id: Annotated[
        str | None,
        typer.Option("--run-id", help="Run to summarize (default: the last one in the file)."),
    ] = None,
    fmt: Annotated[
        str, typer.Option("--format", help="terminal | md | json")
    ] = "terminal",
    top: Annotated[int, typer.Option("--top", help="How many slowest events to list.")] = 10,
) -> None:
    """Per-probe, per-view and per-op tables and the slowest events of one run."""
    from swayscope.trace_reader import summarize_command

    if fmt not in ("terminal", "md", "json"):
        raise fail(f"--format must be terminal, md or json; got {fmt!r}")
    guarded(summarize_command, file, run_id, fmt, top)
