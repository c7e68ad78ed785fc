"""``swayscope sweep``: the suite on each adapter (checkpoints) against one loaded base."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from swayscope.cli.app import app
from swayscope.cli.execute import adapter_file, execute_sweep, guarded, load_spec
from swayscope.cli.flags import OptionalValueCommand, run_flags, telemetry_flags, worker_flags
from swayscope.text_safety import escape_control_chars

if TYPE_CHECKING:
    from swayscope.suite.sweep.adapters import SweepAdapter
    from swayscope.suite.sweep.result import AdapterOutcome


SWEEP_HELP_ADAPTERS = (
    "Adapter folders or glob patterns (checkpoints), after one --adapters or each after its "
    "own; default: the spec's sweep.adapters."
)


@app.command(cls=OptionalValueCommand)
@telemetry_flags
@run_flags
@worker_flags
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
    worker_flags: dict[str, Any],
) -> None:
    """Run the suite on each adapter (checkpoints) against one base model: how the effect grew.

    The base model is loaded once and adapters are swapped; base-view forward passes are
    computed once for all of them. With --ray (or models.workers), adapters run in
    parallel on a pool of Ray workers, one adapter per worker at a time. Checkpoint
    order: by the step number ending each folder's name when every one has it, else as
    given. An adapter that fails to load is an error row; Ctrl-C keeps the finished
    adapters' results and writes the summary. Exit code: 0 every probe of every adapter
    passed, 1 some probe failed, 2 an adapter did not load, the sweep was interrupted, or
    bad input.
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
        loaded = load_spec(spec, None)
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

        result = execute_sweep(
            loaded, ordered, order, flags=flags, run_flags=run_flags, out_dir=out,
            json_path=lambda a: adapter_file(out, a), on_start=started, on_outcome=finished,
            worker_flags=worker_flags,
        )
        return result.exit_code

    guarded(go)


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
    home = result.models.get("workers", {}).get("home")
    worker = f" · worker {home}" if home is not None else ""
    return (
        f"{where}: {verdicts}{status} · {result.wall_s:.2f} s · cache hit {hit:.0f} % · "
        f"load {outcome.load_s:.2f} s{worker}{saved}"
    )
