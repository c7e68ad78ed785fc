"""Running a suite from the command line: load and check every input, wire telemetry, run,
save, report; errors become exit code 2."""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from swayscope.cli.flags import FLAG_OF, RUN_FLAG_OF, WORKER_FLAG_OF
from swayscope.errors import SwayscopeError
from swayscope.exit_codes import EXIT_ERROR
from swayscope.text_safety import escape_control_chars

if TYPE_CHECKING:
    from swayscope.backends.api import DifferentialBackend
    from swayscope.instrumentation import BackendInstrumentation
    from swayscope.instrumentation.settings import TelemetrySettings
    from swayscope.suite.result import SuiteResult
    from swayscope.suite.spec import LoadedSuite
    from swayscope.suite.sweep.adapters import Order, SweepAdapter
    from swayscope.suite.sweep.result import AdapterOutcome, SweepResult
    from swayscope.suite.telemetry import Telemetry


def fail(message: str) -> typer.Exit:
    # Messages quote names and values from specs and trace files: no terminal escapes.
    typer.echo(f"swayscope: error: {escape_control_chars(message, keep_newlines=True)}", err=True)
    return typer.Exit(EXIT_ERROR)


def load_spec(
    spec_path: Path | None, spec_text: str | None, *, strict: bool = False
) -> LoadedSuite:
    from swayscope.suite.spec import load_suite_text

    if spec_path is not None:
        loaded: LoadedSuite = load_any_suite(spec_path, strict=strict)
        return loaded
    assert spec_text is not None
    return load_suite_text(spec_text, "<demo suite>")


def instrumentation(
    loaded: LoadedSuite, settings: TelemetrySettings, telemetry: Telemetry, run_id: str
) -> BackendInstrumentation:
    """The run's instrumentation over the started exporters and the disk cache (both
    stopped again if it fails)."""
    from swayscope.instrumentation import BackendInstrumentation
    from swayscope.instrumentation.disk_cache import DiskCache

    defaults = loaded.spec.defaults
    folder = defaults.disk_cache_dir()
    disk = None
    try:
        if folder is not None:
            disk = DiskCache(folder, defaults.disk_cache_max_bytes)
        return BackendInstrumentation(
            cache_maxsize=defaults.cache_size,
            cache_max_bytes=defaults.cache_max_bytes,
            exporters=telemetry.exporters,
            capture_prompts=settings.capture_prompts,
            prompt_hash_key=settings.prompt_hash_key,
            run_id=run_id,
            disk_cache=disk,
        )
    except BaseException:
        if disk is not None:
            disk.close()
        telemetry.shutdown()
        raise


def close(
    inst: BackendInstrumentation,
    settings: TelemetrySettings,
    backend: DifferentialBackend | None = None,
) -> None:
    """Stop ``backend`` (a pool of workers stops first), then flush and stop the exporters;
    a lingering metrics endpoint may be cut short by Ctrl-C."""
    try:
        if settings.metrics_linger_s:
            typer.echo(f"metrics stay up {settings.metrics_linger_s:g} s for a last scrape")
        if backend is not None:
            backend.close()  # closes the instrumentation too, after the model
        inst.close()
    except KeyboardInterrupt:
        typer.echo(
            "interrupted while the metrics endpoint lingered; the run's result stands", err=True
        )
        with contextlib.suppress(KeyboardInterrupt):
            inst.close()  # a no-op when closing had begun; else a second Ctrl-C skips it


def execute(
    spec_path: Path | None,
    spec_text: str | None,
    *,
    flags: dict[str, Any],
    json_out: Path | None,
    markdown_out: Path | None,
    run_flags: dict[str, Any] | None = None,
    worker_flags: dict[str, Any] | None = None,
    strict: bool = False,
) -> int:
    """Load, check every input and output, wire telemetry, load the model, run, save, report.

    Returns the exit code. Everything a user can get wrong fails before the model loads;
    ``strict`` refuses another tool's suite with entries swayscope cannot run.
    """
    from swayscope.suite.outputs import check_outputs
    from swayscope.suite.runner import (
        build_backend,
        check_model_paths,
        check_pool,
        preload_backend,
        run_suite,
        worker_sources,
    )
    from swayscope.suite.spec import override_defaults, override_workers
    from swayscope.suite.telemetry import run_settings, start_telemetry

    loaded = load_spec(spec_path, spec_text, strict=strict)
    override_defaults(loaded, run_flags or {}, RUN_FLAG_OF)
    override_workers(loaded, worker_flags or {}, WORKER_FLAG_OF)
    spec = loaded.spec
    check_model_paths(loaded)
    pool_sources = worker_sources(
        loaded,
        {k: WORKER_FLAG_OF[k] for k, v in (worker_flags or {}).items() if v is not None},
    )
    check_pool(loaded, pool_sources)
    settings = run_settings(loaded, flags, FLAG_OF)
    trace = settings.source("trace")
    check_outputs(
        {trace: settings.trace, "--json": json_out, "--markdown": markdown_out}, appended={trace}
    )
    run_id = uuid.uuid4().hex[:16]
    telemetry = start_telemetry(settings, run_id)
    inst = instrumentation(loaded, settings, telemetry, run_id)
    try:
        preload_backend(spec.models)
        backend = build_backend(spec.models, spec.defaults, inst, sources=pool_sources)
    except BaseException:
        inst.close()
        telemetry.discard_unused_trace()
        raise
    try:
        result = run_suite(
            loaded, backend, telemetry=telemetry.info(),
            finish_telemetry=lambda: telemetry.finish(inst.health),
        )
        code = save_and_report(result, json_out, markdown_out)
    except BaseException:
        backend.close()
        raise
    close(inst, settings, backend)
    return code



def save_and_report(result: SuiteResult, json_out: Path | None, markdown_out: Path | None) -> int:
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


def load_any_suite(spec_path: Path, *, strict: bool = False) -> Any:
    """A swayscope suite, or a dlm-sway one read as such: its notes and the entries that do
    not run said on stderr (``strict``: entries swayscope cannot run are refused)."""
    from swayscope.integrations.dlm_sway.suite_format import (
        DLM_SWAY,
        DLM_SWAY_VERSION,
        STRICT_HINT,
        check_local_models,
        refuse_unsupported,
    )
    from swayscope.suite.spec import load_suite

    loaded = load_suite(spec_path, formats=(DLM_SWAY,))
    translation = loaded.translation
    if translation is not None:
        if strict:
            refuse_unsupported(loaded)
        typer.echo(
            f"swayscope: {spec_path} is a dlm-sway {DLM_SWAY_VERSION} suite; running it with "
            f"swayscope's probes (`swayscope convert {spec_path}` prints the swayscope spec)",
            err=True,
        )
        for note in translation.notes:
            typer.echo(f"swayscope: note: {note}", err=True)
        for entry in translation.skipped:
            typer.echo(f"swayscope: skip: {entry.where}: {entry.name} ({entry.kind}): "
                       f"{entry.reason}", err=True)
        if any(entry.unsupported for entry in translation.skipped):
            typer.echo(f"swayscope: ({STRICT_HINT})", err=True)
        check_local_models(loaded)
    return loaded


def guarded(fn: Callable[..., int], *args: Any, **kwargs: Any) -> None:
    """Run a command: SIGTERM behaves as Ctrl-C throughout; errors become exit 2."""
    from swayscope.suite.runner import sigterm_as_interrupt

    try:
        with sigterm_as_interrupt():
            code = fn(*args, **kwargs)
    except SwayscopeError as exc:
        raise fail(str(exc)) from None
    except KeyboardInterrupt:
        raise fail("interrupted before the run started; nothing was written") from None
    raise typer.Exit(code)


#: What a sweep writes in its output folder: the summary, and one result JSON per adapter.
SWEEP_SUMMARY = {"summary JSON": "sweep.json", "summary markdown": "sweep.md",
                 "HTML report": "sweep.html"}
SWEEP_ADAPTER_DIR = "adapters"


def adapter_file(out_dir: Path, adapter: SweepAdapter) -> Path:
    """``OUT/adapters/03-step-00020.json``: checkpoint order first, the label made a file name."""
    # At most 200 characters: with the rest of the name and of its temporary file's (about
    # 35), within the 255 bytes a file name may have.
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", adapter.label).strip("._")[:200] or "adapter"
    return out_dir / SWEEP_ADAPTER_DIR / f"{adapter.index + 1:02d}-{name}.json"


def execute_sweep(
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
    worker_flags: dict[str, Any] | None = None,
) -> SweepResult:
    """:func:`_execute` for a sweep: every input and output checked before the base model
    loads, the suite run on each adapter (in this process, or in parallel on a pool of
    workers: ``models.workers`` or ``worker_flags``), each result saved as it finishes,
    the summary (JSON, markdown, HTML in ``out_dir``) saved and shown. Exit code:
    ``.exit_code``."""
    from swayscope.suite.outputs import check_outputs
    from swayscope.suite.runner import (
        check_model_paths,
        check_pool,
        preload_backend,
        worker_sources,
    )
    from swayscope.suite.spec import override_defaults, override_workers
    from swayscope.suite.sweep.pool import PoolRunner
    from swayscope.suite.sweep.runner import (
        AdapterRunner,
        InProcessRunner,
        check_sweepable,
        run_sweep,
    )
    from swayscope.suite.telemetry import run_settings, start_telemetry

    override_defaults(loaded, run_flags, RUN_FLAG_OF)
    override_workers(loaded, worker_flags or {}, WORKER_FLAG_OF)
    check_sweepable(loaded)
    check_model_paths(loaded, adapter=False)
    pool_sources = worker_sources(
        loaded,
        {k: WORKER_FLAG_OF[k] for k, v in (worker_flags or {}).items() if v is not None},
    )
    check_pool(loaded, pool_sources)
    settings = run_settings(loaded, flags, FLAG_OF)
    summary = {label: out_dir / name for label, name in SWEEP_SUMMARY.items()}
    per_adapter = {
        f"{a.label}'s {kind}": path
        for a in adapters
        for kind, path in (("result JSON", json_path(a)), ("markdown", markdown_path(a)))
    }
    trace = settings.source("trace")
    check_outputs({trace: settings.trace, **summary, **per_adapter}, appended={trace})
    run_id = uuid.uuid4().hex[:16]
    telemetry = start_telemetry(settings, run_id)
    inst = instrumentation(loaded, settings, telemetry, run_id)
    pool: PoolRunner | None = None
    try:
        preload_backend(loaded.spec.models)
        runner: AdapterRunner
        if loaded.spec.models.workers is not None:
            runner = pool = PoolRunner(
                loaded, inst, telemetry=telemetry.info(), on_start=on_start,
                sources=pool_sources,
            )
        else:
            runner = InProcessRunner(loaded, inst, telemetry=telemetry.info(), on_start=on_start)
        sweep = run_sweep(
            loaded, adapters, runner, inst, order=order, json_path=json_path,
            markdown_path=markdown_path, on_outcome=on_outcome, telemetry=telemetry.info(),
            finish_telemetry=lambda: telemetry.finish(inst.health),
        )
        save_sweep(sweep, summary)
    except BaseException:
        if pool is not None and pool.backend is not None:
            pool.backend.close()  # stops the workers, then closes the instrumentation
        inst.close()
        raise
    close(inst, settings, pool.backend if pool is not None else None)
    return sweep


def save_sweep(sweep: SweepResult, paths: dict[str, Path]) -> None:
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
