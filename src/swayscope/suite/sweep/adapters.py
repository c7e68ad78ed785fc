"""Which adapters a sweep runs, what each is called, and in which order.

Adapters are given as folders or glob patterns (``ckpt/step-*``); a pattern's matches
are taken in natural order (``checkpoint-500`` before ``checkpoint-1000``). The
*checkpoint order* is by the step number at the end of each folder's name
(``step-00040``, ``checkpoint-1000``, ``ckpt_3``) when every adapter has one, else the
order given. Each adapter gets a label, unique within the sweep: its folder's name,
or ``parent/name`` when two folders share a name.
"""

from __future__ import annotations

import glob
import os
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from swayscope.errors import SpecError

#: The step number a checkpoint folder's name ends with.
_STEP = re.compile(r"(?:^|\D)(\d+)$")
_DIGITS = re.compile(r"(\d+)")

#: How a sweep's adapters were ordered: by the step in their names, or as given.
Order = Literal["step", "given"]


@dataclass(frozen=True, slots=True)
class SweepAdapter:
    """One adapter of a sweep: its folder, label, step (None: not in its name) and place
    in checkpoint order."""

    label: str
    path: Path
    step: int | None
    index: int


def parse_step(name: str) -> int | None:
    """The step number ``name`` ends with (``step-00040`` → 40), or None."""
    match = _STEP.search(name)
    return int(match.group(1)) if match else None


def _natural(path: str) -> list[tuple[int, str]]:
    """Sort key comparing runs of digits as numbers (``ckpt-500`` < ``ckpt-1000``)."""
    return [(int(part), "") if part.isdigit() else (0, part) for part in _DIGITS.split(path)]


def expand(patterns: Sequence[str], source: str) -> list[Path]:
    """The adapter folders ``patterns`` name, in the order given (duplicates dropped).

    A folder that does not exist, or a pattern that matches no folder, is an input
    error (:class:`SpecError` naming ``source``, e.g. ``--adapters``): it stops the sweep
    before any model loads. A folder that exists but is not a loadable adapter is
    reported on its own row when the sweep reaches it.
    """
    found: list[Path] = []
    seen: set[str] = set()
    for pattern in patterns:
        pattern = os.path.expanduser(pattern)
        if glob.has_magic(pattern):
            matches = sorted((m for m in glob.glob(pattern) if os.path.isdir(m)), key=_natural)
            if not matches:
                raise SpecError(
                    f"{source}: pattern {pattern!r} matches no folder; check the pattern "
                    "(quote it so the shell leaves it to swayscope)"
                )
        elif not os.path.isdir(pattern):
            raise SpecError(
                f"{source}: adapter folder {pattern!r} does not exist; give the folders of "
                "PEFT LoRA adapters (checkpoints), or glob patterns"
            )
        else:
            matches = [pattern]
        for match in matches:
            real = os.path.realpath(match)
            if real not in seen:
                seen.add(real)
                found.append(Path(match))
    return found


def _labels(paths: Sequence[Path]) -> list[str]:
    """Each folder's name; ``parent/name`` where names repeat; ``#2``, ``#3`` after that."""
    names = [p.name or str(p) for p in paths]
    counts = Counter(names)
    labels = [
        f"{p.parent.name}/{name}" if counts[name] > 1 and p.parent.name else name
        for p, name in zip(paths, names, strict=True)
    ]
    out: list[str] = []
    taken: set[str] = set()
    last: dict[str, int] = {}  # per label, the last number given: linear in the adapters
    for label in labels:
        n = last.get(label, 1)
        unique = label if n == 1 else f"{label}#{n}"
        while unique in taken:
            n += 1
            unique = f"{label}#{n}"
        last[label] = n
        taken.add(unique)
        out.append(unique)
    return out


def order_adapters(paths: Sequence[Path]) -> tuple[list[SweepAdapter], Order]:
    """The adapters in checkpoint order: by step when every name has one, else as given."""
    steps = [parse_step(p.name) for p in paths]
    labels = _labels(paths)
    order: Order = "step" if paths and all(s is not None for s in steps) else "given"
    ranked = list(range(len(paths)))
    if order == "step":
        ranked.sort(key=lambda i: (steps[i], i))
    return [
        SweepAdapter(label=labels[i], path=paths[i], step=steps[i], index=place)
        for place, i in enumerate(ranked)
    ], order


def named_adapters(adapters: Sequence[tuple[str, Path]]) -> list[SweepAdapter]:
    """Adapters with labels of the caller's choosing, in the order given (a demo's trio)."""
    return [
        SweepAdapter(label=label, path=path, step=parse_step(path.name), index=i)
        for i, (label, path) in enumerate(adapters)
    ]


__all__ = ["Order", "SweepAdapter", "expand", "named_adapters", "order_adapters", "parse_step"]
