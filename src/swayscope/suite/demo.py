"""The demos: the built-in tiny model and adapter, or a real model with three adapters.

``swayscope demo`` runs the five forward-pass probes on the tiny model and its adapter.
``swayscope demo --model smollm2`` runs them on SmolLM2-135M-Instruct with three
adapters of one shape (see :mod:`swayscope.training.trio`): one **trained** on
Shakespeare on the CPU, a **no-op** one and a **random** one, so the verdicts can
be read against two controls; and four more that read the training text (its document,
``dlm_source``) or generate: did it forget general knowledge, does it write like the
play, can it recite the play.
Base model, adapters and document are built once and cached under ``$SWAYSCOPE_HOME``.
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

#: The kinds a trio demo adds for an adapter trained on a style: they read its training
#: text (the suite's ``dlm_source``) or generate. Lengths kept short: each generates on
#: the CPU under base, ft and three null adapters.
TRIO_EXTRA_YAML = """\
  - kind: calibration_drift
    items_limit: 60
  - kind: style_fingerprint
    max_new_tokens: 32
  - kind: leakage
    max_new_tokens: 32
    perturbations: [typo, synonym_swap]
"""

#: Parts the trio demo cuts its training text into, each a prose section of its document.
DOCUMENT_PARTS = 8

#: What each adapter of a trio is, in a few words (the demo prints it above its report).
TRIO_ROLES: dict[str, str] = {
    "trained": "LoRA trained on the style; every probe should see it, calibration_drift "
    "what it cost",
    "noop": "lora_B = 0: changes nothing; no probe should call it an effect",
    "random": "untrained, random lora_B the trained one's size: changes the model, "
    "learned nothing",
}


def cache_dir() -> Path:
    """Where the demo keeps its model and outputs: the swayscope home (:mod:`swayscope.home`)."""
    return swayscope_home()


def demo_suite_yaml(
    base: Path,
    adapter: Path,
    perplexity_text: str | None = None,
    document: Path | None = None,
) -> str:
    """The demo suite for ``base`` + ``adapter``; ``perplexity_shift`` scores
    ``perplexity_text`` when given (else its packaged passage); with the training
    ``document``, the trio's extra kinds (:data:`TRIO_EXTRA_YAML`) read it."""
    text = DEMO_SUITE_YAML.format(base=json.dumps(str(base)), adapter=json.dumps(str(adapter)))
    if perplexity_text is not None:
        text += f"    text: {json.dumps(perplexity_text)}\n"
    if document is not None:
        text += TRIO_EXTRA_YAML + f"dlm_source: {json.dumps(str(document))}\n"
    return text


def training_document(text: str, parts: int = DOCUMENT_PARTS) -> str:
    """``text`` as a ``.dlm`` document of ``parts`` prose sections of about equal length,
    cut at blank lines."""
    paragraphs = text.strip().split("\n\n")
    size = len(text) / parts
    sections: list[list[str]] = [[]]
    done = 0
    for para in paragraphs:
        if sections[-1] and done >= size * len(sections) and len(sections) < parts:
            sections.append([])
        sections[-1].append(para)
        done += len(para) + 2
    body = "".join("::prose::\n" + "\n\n".join(s) + "\n" for s in sections)
    return "---\ndlm_id: swayscope-demo\n---\n" + body


def write_document(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` unless it already holds it (atomically); return ``path``."""
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = path.with_suffix(".tmp")
        staging.write_text(text, encoding="utf-8")
        staging.replace(path)
    return path


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
    """A trio demo ready to run: the base folder, the three adapters, the held-out text,
    and the training text as a document of sections."""

    base_dir: Path
    trio: AdapterTrio
    heldout: str
    document: Path

    def suite_yaml(self, adapter: str) -> str:
        """The demo suite for one adapter of the trio (``trained``, ``noop`` or ``random``)."""
        return demo_suite_yaml(
            self.base_dir, self.trio.adapters()[adapter], self.heldout, self.document
        )


def prepare_trio_demo(demo: TrioDemo, home: Path, *, live: bool | None = None) -> PreparedTrio:
    """Build (or reuse) the base model and the three adapters under ``home/NAME``.

    Training shows a progress bar with the loss (``live``: None decides by the terminal).
    """
    base_dir = demo.build_base(home)
    train_text = package_text(demo.train_text)
    trio = build_adapter_trio(
        base_dir,
        train_text,
        home / demo.name / "adapters",
        shape=demo.shape,
        plan=demo.plan,
        progress=lambda steps: loss_progress(steps, f"training the {demo.name} LoRA", live=live),
    )
    document = write_document(
        home / demo.name / "training.dlm", training_document(train_text)
    )
    return PreparedTrio(
        base_dir=base_dir, trio=trio, heldout=package_text(demo.heldout_text),
        document=document,
    )


__all__ = [
    "DEMO_MODELS",
    "DEMO_SUITE_YAML",
    "DOCUMENT_PARTS",
    "SMOLLM2_DEMO",
    "TRIO_DEMOS",
    "TRIO_EXTRA_YAML",
    "TRIO_ROLES",
    "PreparedTrio",
    "TrioDemo",
    "cache_dir",
    "demo_suite_yaml",
    "prepare_trio_demo",
    "training_document",
    "write_document",
]
