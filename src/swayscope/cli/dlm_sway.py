"""``swayscope convert`` and ``swayscope sway``: for users coming from dlm-sway."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from swayscope.cli.app import app
from swayscope.cli.execute import guarded
from swayscope.cli.flags import FLAG_OF, StrictOpt, telemetry_flags


@app.command()
def convert(
    spec: Annotated[Path, typer.Argument(help="A dlm-sway suite file (sway.yaml).")],
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write the spec to OUT (model paths relative to "
                     "it) instead of printing it (absolute paths)."),
    ] = None,
    strict: StrictOpt = False,
) -> None:
    """Print the swayscope spec equivalent to a dlm-sway suite, what differs as comments
    (entries swayscope cannot run are kept there, commented out, saying why)."""

    def go() -> int:
        from swayscope.errors import OutputPathError
        from swayscope.integrations.dlm_sway.suite_format import (
            DLM_SWAY,
            STRICT_HINT,
            refuse_unsupported,
            render_spec,
        )
        from swayscope.suite.outputs import check_outputs, write_text_atomic
        from swayscope.suite.spec import load_suite

        check_outputs({"--output": output})
        if output is not None and _same_file(output, spec):
            raise OutputPathError(
                f"--output {str(output)!r} is the dlm-sway suite being converted: writing it "
                "would replace the input; give the swayscope spec its own file"
            )
        loaded = load_suite(spec, formats=(DLM_SWAY,))
        if strict:
            refuse_unsupported(loaded)
        text = render_spec(loaded, relative_to=output.parent if output is not None else None)
        skipped = loaded.translation.skipped if loaded.translation else ()
        for entry in skipped:
            typer.echo(f"swayscope: not converted, kept as a comment: {entry.where}: "
                       f"{entry.name} ({entry.kind}): {entry.reason}", err=True)
        if any(entry.unsupported for entry in skipped):
            typer.echo(f"swayscope: ({STRICT_HINT})", err=True)
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

    guarded(go)


def _same_file(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` name one file (through a link, a hard link or ``..``)."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # one does not exist (yet)
        return os.path.realpath(a) == os.path.realpath(b)


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

    guarded(go)
