"""``swayscope cache info|prune|clear``: the durable forward cache on disk."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from swayscope.cli.app import app
from swayscope.cli.execute import fail, guarded

cache_app = typer.Typer(
    no_args_is_help=True,
    help="Show and manage the durable forward cache ($SWAYSCOPE_HOME/cache by default).",
)
app.add_typer(cache_app, name="cache")

DirOpt = Annotated[
    Path | None,
    typer.Option("--cache-dir", help="The cache folder (default: $SWAYSCOPE_HOME/cache)."),
]


def _folder(cache_dir: Path | None) -> Path:
    from swayscope.home import default_cache_dir

    return (cache_dir or default_cache_dir()).expanduser()


def _open(cache_dir: Path | None) -> object:
    from swayscope.instrumentation.disk_cache import FILE_NAME, DiskCache

    folder = _folder(cache_dir)
    if not (folder / FILE_NAME).is_file():
        raise fail(f"no disk cache in {str(folder)!r} (nothing was cached there yet)")
    return DiskCache(folder)


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


@cache_app.command("info")
def info(cache_dir: DirOpt = None) -> None:
    """Where the cache is, its entries and bytes, its bound and evictions so far."""

    def go() -> int:
        from swayscope.instrumentation.disk_cache import DiskCache

        disk = _open(cache_dir)
        assert isinstance(disk, DiskCache)
        try:
            s = disk.stats()
            on_disk = sum(
                p.stat().st_size for p in disk.directory.iterdir()
                if p.name.startswith(disk.path.name)
            )
            typer.echo(
                f"disk cache: {disk.path}\n"
                f"entries:    {s.entries:,}\n"
                f"values:     {_size(s.nbytes)} (bound {_size(disk.max_bytes)}; "
                f"files on disk {_size(on_disk)})\n"
                f"evicted:    {s.evictions:,} entries so far"
            )
        finally:
            disk.close()
        return 0

    guarded(go)


@cache_app.command("prune")
def prune(
    max_bytes: Annotated[
        int, typer.Option("--max-bytes", help="Evict least recently used entries down to this.")
    ],
    cache_dir: DirOpt = None,
) -> None:
    """Evict the least recently used entries until the cache holds at most --max-bytes."""

    def go() -> int:
        from swayscope.instrumentation.disk_cache import DiskCache

        if max_bytes < 0:
            raise fail(f"--max-bytes must be >= 0; got {max_bytes}")
        disk = _open(cache_dir)
        assert isinstance(disk, DiskCache)
        try:
            evicted = disk.prune(max_bytes)
            s = disk.stats()
            typer.echo(f"evicted {evicted:,} entries; {s.entries:,} left ({_size(s.nbytes)})")
        finally:
            disk.close()
        return 0

    guarded(go)


@cache_app.command("clear")
def clear(cache_dir: DirOpt = None) -> None:
    """Remove every cached forward pass (file digests and the record of runs stay)."""

    def go() -> int:
        from swayscope.instrumentation.disk_cache import DiskCache

        disk = _open(cache_dir)
        assert isinstance(disk, DiskCache)
        try:
            before = disk.stats().entries
            disk.clear()
            typer.echo(f"removed {before:,} entries from {disk.path}")
        finally:
            disk.close()
        return 0

    guarded(go)
