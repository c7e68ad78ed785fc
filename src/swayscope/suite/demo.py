"""The demos: the built-in tiny model and adapter, or a real model with three adapters.

``swayscope demo`` runs all five probes on the tiny model and its adapter.
``swayscope demo --model smollm2`` runs them on SmolLM2-135M-Instruct with three
adapters of one shape (see :mod:`swayscope.training.trio`): one **trained** on
Shakespeare on the CPU, a **no-op** one and a **random** one, so the verdicts can
be read against two controls. Base model and adapters are built once and cached
under ``$SWAYSCOPE_HOME``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from swayscope.backends.smollm2_fp32 import smollm2_fp32_folder
from swayscope.backends.tiny import package_text
from swayscope.home import swayscope_home
from swayscope.training.plan import LoraShape, TrainingPlan
from swayscope.training.progress import loss_progress
from swayscope.training.trio import AdapterTrio, build_adapter_trio

DEMO_SUITE_YAML = """\
version: 1
name: demo
models:
  kind: hf
  base: {base}
  adapter: {adapter}
  device: auto
  dtype: auto
defaults:
  seed: 0
  top_k: 64
  max_batch_size: 16
  max_batch_tokens: 4096
suite:
  - kind: null_adapter
    n: 3
  - kind: delta_kl
  - kind: adapter_ablation
  - kind: prompt_collapse
  - kind: perplexity_shift
"""

#: What each adapter of a trio is, in a few words (the demo prints it above its report).
TRIO_ROLES: dict[str, str] = {
    "trained": "LoRA trained on the style; every probe should see it",
    "noop": "lora_B = 0: changes nothing; no probe should call it an effect",
    "random": "untrained, random lora_B the trained one's size: changes the model, "
    "learned nothing",
}


def cache_dir() -> Path:
    """Where the demo keeps its model and outputs: the swayscope home (:mod:`swayscope.home`)."""
    return swayscope_home()


def demo_suite_yaml(base: Path, adapter: Path, perplexity_text: str | None = None) -> str:
    """The demo suite for ``base`` + ``adapter``; ``perplexity_shift`` scores
    ``perplexity_text`` when given (else its packaged passage)."""
    text = DEMO_SUITE_YAML.format(base=json.dumps(str(base)), adapter=json.dumps(str(adapter)))
    if perplexity_text is not None:
        text += f"    text: {json.dumps(perplexity_text)}\n"
    return text


@dataclass(frozen=True, slots=True)
class TrioDemo:
    """A base model, the LoRA to train on it, and the texts: what ``demo --model NAME`` runs."""

    name: str
    build_base: Callable[[Path], Path]
    """Home folder → the base model folder (built and cached there on first use)."""
    shape: LoraShape
    plan: TrainingPlan
    train_text: str
    """Packaged text (``swayscope/data``) the adapter is trained on."""
    heldout_text: str
    """Packaged text of the same style, never trained on: ``perplexity_shift`` scores it."""


#: SmolLM2 with a rank-8 LoRA on every attention projection, trained on Coriolanus.
SMOLLM2_DEMO = TrioDemo(
    name="smollm2",
    build_base=smollm2_fp32_folder,
    shape=LoraShape(rank=8, alpha=16),
    plan=TrainingPlan(steps=20, lr=3e-3, batch_size=6, window=64, seed=0),
    train_text="shakespeare.txt",
    heldout_text="shakespeare_heldout.txt",
)

#: ``demo --model NAME`` for every NAME but the default ``tiny``.
TRIO_DEMOS: dict[str, TrioDemo] = {SMOLLM2_DEMO.name: SMOLLM2_DEMO}
#: Every ``--model`` value.
DEMO_MODELS: tuple[str, ...] = ("tiny", *TRIO_DEMOS)


@dataclass(frozen=True, slots=True)
class PreparedTrio:
    """A trio demo ready to run: the base folder, the three adapters, the held-out text."""

    base_dir: Path
    trio: AdapterTrio
    heldout: str

    def suite_yaml(self, adapter: str) -> str:
        """The demo suite for one adapter of the trio (``trained``, ``noop`` or ``random``)."""
        return demo_suite_yaml(self.base_dir, self.trio.adapters()[adapter], self.heldout)


def prepare_trio_demo(demo: TrioDemo, home: Path, *, live: bool | None = None) -> PreparedTrio:
    """Build (or reuse) the base model and the three adapters under ``home/NAME``.

    Training shows a progress bar with the loss (``live``: None decides by the terminal).
    """
    base_dir = demo.build_base(home)
    trio = build_adapter_trio(
        base_dir,
        package_text(demo.train_text),
        home / demo.name / "adapters",
        shape=demo.shape,
        plan=demo.plan,
        progress=lambda steps: loss_progress(steps, f"training the {demo.name} LoRA", live=live),
    )
    return PreparedTrio(base_dir=base_dir, trio=trio, heldout=package_text(demo.heldout_text))


__all__ = [
    "DEMO_MODELS",
    "DEMO_SUITE_YAML",
    "SMOLLM2_DEMO",
    "TRIO_DEMOS",
    "TRIO_ROLES",
    "PreparedTrio",
    "TrioDemo",
    "cache_dir",
    "demo_suite_yaml",
    "prepare_trio_demo",
]
