"""A trained adapter and its two controls, built once and cached.

:func:`build_adapter_trio` writes three adapter folders of one shape::

    ROOT/trained/   LoRA trained for ``plan.steps`` steps on the text
    ROOT/noop/      the same run's step-0 checkpoint (lora_B = 0: changes nothing)
    ROOT/random/    step-0 lora_A, random lora_B the size of the trained one
    ROOT/swayscope-trio.json   fingerprint of what was built, losses, training time

A folder whose fingerprint (format, base model, text, shape, plan) matches is
reused as is, so a second call returns in milliseconds. Nothing is half-written:
the trio is built in a staging folder and moved into place.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from swayscope.build_markers import read_marker
from swayscope.errors import ConfigError
from swayscope.training.controls import write_random_adapter
from swayscope.training.loop import StepCallback
from swayscope.training.lora import train_lora
from swayscope.training.plan import LoraShape, TrainingPlan

#: Bump when what build_adapter_trio writes changes, so stale folders are rebuilt.
TRIO_FORMAT = 1
MARKER = "swayscope-trio.json"
#: Given the number of steps, a context that yields a per-step callback (a progress bar).
ProgressFactory = Callable[[int], AbstractContextManager[StepCallback]]
#: The three adapters, in the order a demo shows them.
TRIO_NAMES: tuple[str, ...] = ("trained", "noop", "random")


@dataclass(frozen=True, slots=True)
class AdapterTrio:
    """The three adapter folders, and how the trained one's training went."""

    trained: Path
    noop: Path
    random: Path
    train_seconds: float
    """Wall time of the training steps when the trio was built (cached: the first build's)."""
    first_loss: float
    last_loss: float
    steps: int

    def adapters(self) -> dict[str, Path]:
        """Name → folder, in :data:`TRIO_NAMES` order."""
        return {name: getattr(self, name) for name in TRIO_NAMES}


def _base_fingerprint(base_dir: Path) -> dict[str, Any]:
    """The base model's config and weight file sizes: changes when the model does."""
    files = sorted(p for p in base_dir.iterdir() if p.suffix in (".safetensors", ".bin"))
    try:
        config = json.loads((base_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        config = None
    return {"config": config, "weights": {p.name: p.stat().st_size for p in files}}


def trio_fingerprint(base_dir: Path, text: str, shape: LoraShape, plan: TrainingPlan) -> str:
    """A digest of everything that determines the trio's contents."""
    payload = {
        "format": TRIO_FORMAT,
        "base": _base_fingerprint(base_dir),
        "text_sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
        "shape": asdict(shape),
        "plan": plan.to_dict(),
    }
    blob = json.dumps(payload, sort_keys=True, default=list).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()


def _cached(root: Path, fingerprint: str) -> AdapterTrio | None:
    marker = read_marker(root / MARKER)
    if marker is None or marker.get("fingerprint") != fingerprint:
        return None
    folders = {name: root / name for name in TRIO_NAMES}
    if not all((d / "adapter_model.safetensors").is_file() for d in folders.values()):
        return None
    try:
        return AdapterTrio(
            **folders,
            train_seconds=float(marker["train_seconds"]),
            first_loss=float(marker["first_loss"]),
            last_loss=float(marker["last_loss"]),
            steps=int(marker["steps"]),
        )
    except (KeyError, TypeError, ValueError):
        return None


def build_adapter_trio(
    base_dir: Path,
    text: str,
    root: Path,
    *,
    shape: LoraShape,
    plan: TrainingPlan,
    progress: ProgressFactory | None = None,
) -> AdapterTrio:
    """Train (or reuse) the trained, no-op and random adapters under ``root``.

    When it trains, ``progress(steps)`` is entered around training and the callback it
    yields gets ``(step, loss)`` after each step (a progress bar); a reused trio never
    calls it.
    """
    base_dir, root = Path(base_dir), Path(root).expanduser()
    if not (base_dir / "config.json").is_file():
        raise ConfigError(
            f"base model folder {str(base_dir)!r} has no config.json; pass a transformers "
            "model folder to train adapters on"
        )
    fingerprint = trio_fingerprint(base_dir, text, shape, plan)
    found = _cached(root, fingerprint)
    if found is not None:
        return found
    try:
        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".trio-build-", dir=root))
    except OSError as exc:
        raise ConfigError(f"cannot create adapter folder {str(root)!r}: {exc}") from exc
    try:
        run_plan = replace(plan, save_at=(0,))
        with progress(plan.steps) if progress is not None else nullcontext() as on_step:
            trained = train_lora(
                base_dir, text, staging / "checkpoints", shape=shape, plan=run_plan,
                on_step=on_step,
            )
        os.replace(trained.final, staging / "trained")
        os.replace(trained.checkpoints[0], staging / "noop")
        write_random_adapter(
            staging / "noop", staging / "trained", staging / "random", seed=plan.seed
        )
        (root / MARKER).unlink(missing_ok=True)
        for name in TRIO_NAMES:
            target = root / name
            if target.exists():
                shutil.rmtree(target)
            os.replace(staging / name, target)
        marker = {
            "format": TRIO_FORMAT,
            "fingerprint": fingerprint,
            "train_seconds": trained.seconds,
            "first_loss": trained.losses[0],
            "last_loss": trained.losses[-1],
            "steps": plan.steps,
            "losses": trained.losses,
        }
        (root / MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    found = _cached(root, fingerprint)
    assert found is not None
    return found


__all__ = [
    "MARKER",
    "TRIO_FORMAT",
    "TRIO_NAMES",
    "AdapterTrio",
    "ProgressFactory",
    "build_adapter_trio",
    "trio_fingerprint",
]
