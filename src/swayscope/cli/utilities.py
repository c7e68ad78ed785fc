"""``swayscope tiny-model`` and ``swayscope trace summarize``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from swayscope.cli.app import app, trace_app
from swayscope.cli.execute import fail, guarded
from swayscope.errors import ConfigError

#: The suite ``tiny-model --checkpoints`` writes next to the model.
SWEEP_SUITE = "suite.yaml"


@app.command("tiny-model")
def tiny_model(
    directory: Annotated[
        Path,
        typer.Argument(help="Folder to write tiny-llama/ (base) and tiny-lora/ (adapter) into."),
    ],
    seed: Annotated[int, typer.Option(help="Seed for weights, tokenizer and adapter.")] = 0,
    checkpoints: Annotated[
        int | None,
        typer.Option(
            "--checkpoints",
            help="Also keep N checkpoints of the adapter's training in DIRECTORY/checkpoints "
            "(steps 0 to 40, e.g. 5: 0, 5, 10, 20, 40) and write DIRECTORY/suite.yaml, the "
            "demo suite with a sweep over them: swayscope sweep DIRECTORY/suite.yaml",
        ),
    ] = None,
) -> None:
    """Write the offline tiny Llama model, BPE tokenizer and LoRA adapter to DIRECTORY."""

    def go() -> int:
        from swayscope.backends.tiny import build_tiny, checkpoint_steps

        if checkpoints is not None:
            try:
                checkpoint_steps(checkpoints)  # a bad count fails before anything is built
            except ConfigError as exc:
                raise fail(f"--checkpoints: {exc}") from None

        paths = build_tiny(directory, seed=seed)
        typer.echo(f"base model: {paths.base_dir}\nadapter:    {paths.adapter_dir}")
        if checkpoints is not None:
            _write_checkpoints(directory, checkpoints, seed)
        return 0

    guarded(go)


def _write_checkpoints(directory: Path, count: int, seed: int) -> None:
    """The adapter's checkpoints, and a suite that sweeps them (paths relative to it)."""
    from swayscope.backends.tiny import (
        ADAPTER_DIRNAME,
        BASE_DIRNAME,
        CHECKPOINTS_DIRNAME,
        train_tiny_checkpoints,
    )
    from swayscope.suite.demo import demo_suite_yaml
    from swayscope.suite.outputs import write_text_atomic

    trained = train_tiny_checkpoints(directory, count, seed=seed)
    suite = directory / SWEEP_SUITE
    write_text_atomic(
        suite,
        demo_suite_yaml(Path(BASE_DIRNAME), Path(ADAPTER_DIRNAME))
        + f"sweep:\n  adapters: [{CHECKPOINTS_DIRNAME}/step-*]\n",
    )
    steps = ", ".join(str(s) for s in sorted(trained.checkpoints))
    typer.echo(
        f"checkpoints: {directory / CHECKPOINTS_DIRNAME} (steps {steps})\n"
        f"suite:       {suite} (swayscope sweep {suite})"
    )


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
