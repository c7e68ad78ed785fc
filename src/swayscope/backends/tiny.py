"""An offline tiny Llama model, BPE tokenizer and LoRA adapter, built in seconds.

:func:`build_tiny` writes two folders that :class:`swayscope.backends.hf.HFBackend`
loads like any real model::

    DIR/tiny-llama/   config.json, model.safetensors, tokenizer.json, tokenizer_config.json
    DIR/tiny-lora/    adapter_config.json, adapter_model.safetensors
    DIR/swayscope-tiny.json   (what was built: format version, seed)

and :func:`train_tiny_checkpoints` the adapter's training checkpoints, to sweep over::

    DIR/checkpoints/step-00000/ … step-00040/

Everything comes from text shipped in the package (``swayscope/data``): the
tokenizer is a byte-level BPE trained on ``corpus.txt``; the base model is a
2-layer Llama (hidden 96) trained for a few steps on the same text, so its
next-token distributions have some structure rather than being uniform;
the LoRA adapter (rank 8 on ``q/k/v/o_proj``) is then fine-tuned on
``finetune.txt`` (a lighthouse keeper's log), so it shifts the model in a
consistent direction — its divergence from the base is far larger than a random
(null) adapter of the same size.

Deterministic for a seed: initialisation and data order come from seeded
generators, and training runs single-threaded (the thread count is restored).
A folder already built for the same seed and format is reused as is.
No network access is attempted.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from swayscope.build_markers import read_marker
from swayscope.errors import ConfigError, ModelLoadError, SwayscopeError
from swayscope.training.loop import train_steps
from swayscope.training.lora import (
    TrainedLora,
    offline_and_quiet,
    seeded_threads,
    text_token_ids,
    train_lora,
)
from swayscope.training.plan import LoraShape, TrainingPlan

#: Bump when what build_tiny writes changes, so stale folders are rebuilt.
TINY_FORMAT = 2
BASE_DIRNAME = "tiny-llama"
ADAPTER_DIRNAME = "tiny-lora"
MARKER = "swayscope-tiny.json"

VOCAB_SIZE = 1024
HIDDEN = 96
INTERMEDIATE = 96
LAYERS = 2
HEADS = 4
KV_HEADS = 2
CONTEXT = 2048
LORA_RANK = 8
LORA_ALPHA = 16
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")
BASE_STEPS = 20
BASE_LR = 5e-3
ADAPTER_STEPS = 40
ADAPTER_LR = 3e-3
BATCH = 16
WINDOW = 64
SPECIAL_TOKENS = ("<pad>", "<s>", "</s>")
CHECKPOINTS_DIRNAME = "checkpoints"
TINY_LORA_SHAPE = LoraShape(rank=LORA_RANK, alpha=LORA_ALPHA, targets=LORA_TARGETS)


@dataclass(frozen=True, slots=True)
class TinyModelPaths:
    """Where :func:`build_tiny` put the base model folder and the LoRA adapter folder."""

    base_dir: Path
    adapter_dir: Path


def package_text(name: str) -> str:
    """A text file shipped in ``swayscope/data`` (e.g. ``corpus.txt``, ``perplexity.txt``)."""
    return resources.files("swayscope").joinpath("data", name).read_text(encoding="utf-8")


def _paths(root: Path) -> TinyModelPaths:
    return TinyModelPaths(base_dir=root / BASE_DIRNAME, adapter_dir=root / ADAPTER_DIRNAME)


def _is_built(root: Path, seed: int) -> bool:
    paths = _paths(root)
    marker = read_marker(root / MARKER)
    if marker is None or marker.get("format") != TINY_FORMAT:
        return False
    if marker.get("seed") != seed:
        return False
    needed = [
        paths.base_dir / "config.json",
        paths.base_dir / "model.safetensors",
        paths.base_dir / "tokenizer.json",
        paths.base_dir / "tokenizer_config.json",
        paths.adapter_dir / "adapter_config.json",
        paths.adapter_dir / "adapter_model.safetensors",
    ]
    return all(p.is_file() for p in needed)


def build_tiny(path: Path | str, seed: int = 0) -> TinyModelPaths:
    """Write (or reuse) the tiny base model, tokenizer and LoRA adapter under ``path``.

    Takes a few seconds on a CPU, offline. Idempotent: when ``path`` already holds
    a build for the same ``seed`` it returns at once; a build for another seed is
    replaced. Only ``tiny-llama/``, ``tiny-lora/`` and ``swayscope-tiny.json``
    inside ``path`` are touched.
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"tiny model seed must be a non-negative integer; got {seed!r}")
    root = Path(path).expanduser()
    if root.exists() and not root.is_dir():
        raise ConfigError(
            f"tiny model folder {str(root)!r} exists and is not a folder; "
            "pass a new or existing folder path"
        )
    if _is_built(root, seed):
        return _paths(root)
    created = not root.exists()
    try:
        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".tiny-build-", dir=root))
    except OSError as exc:
        raise ConfigError(f"cannot create tiny model folder {str(root)!r}: {exc}") from exc
    try:
        # Everything is written in the staging folder, the marker last; then only renames.
        _build_into(staging, seed)
        (staging / MARKER).write_text(
            json.dumps({"format": TINY_FORMAT, "seed": seed}, indent=2) + "\n", encoding="utf-8"
        )
        (root / MARKER).unlink(missing_ok=True)
        for name in (BASE_DIRNAME, ADAPTER_DIRNAME):
            target = root / name
            if target.exists():
                shutil.rmtree(target)
            os.replace(staging / name, target)
        os.replace(staging / MARKER, root / MARKER)
        return _paths(root)
    except SwayscopeError:
        raise
    except Exception as exc:  # a full disk shows as the writing library's own error
        raise ModelLoadError(
            f"cannot build the tiny model in {str(root)!r}: {type(exc).__name__}: {exc}. "
            "Check that the folder is writable and its disk has a few MB free"
        ) from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if created and not (root / MARKER).exists():
            with contextlib.suppress(OSError):  # only if empty: nothing else was ours
                root.rmdir()


@contextmanager
def _quiet_build(seed: int) -> Iterator[None]:
    """Seeded, single-threaded (deterministic), offline and quiet; all restored after."""
    with offline_and_quiet(), seeded_threads(seed, threads=1):
        yield


def _token_tensor(tokenizer: Any, name: str) -> Any:
    """A packaged text as one long tensor of token ids (no BOS, no length warning)."""
    return text_token_ids(tokenizer, package_text(name))


def tiny_adapter_plan(seed: int = 0, *, steps: int = ADAPTER_STEPS,
                      save_at: tuple[int, ...] = ()) -> TrainingPlan:
    """How the tiny adapter is trained on ``finetune.txt`` (``steps`` and ``save_at`` let a
    caller train checkpoints of it: see :func:`swayscope.training.lora.train_lora`)."""
    return TrainingPlan(
        steps=steps, lr=ADAPTER_LR, batch_size=BATCH, window=WINDOW, seed=seed,
        save_at=save_at, threads=1,
    )


def checkpoint_steps(count: int, last: int = ADAPTER_STEPS) -> tuple[int, ...]:
    """``count`` steps from 0 to ``last``, dense early where training moves fastest: 0,
    then ``last`` halved again and again (5: 0, 5, 10, 20, 40); evenly spaced where
    halving would give one step twice. One checkpoint is the last step alone."""
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= last + 1:
        raise ConfigError(
            f"checkpoints must be a whole number from 1 to {last + 1} (the tiny adapter trains "
            f"for {last} steps, and step 0 is its initialisation); got {count!r}"
        )
    if count == 1:
        return (last,)
    halved = {0, *(round(last / 2**k) for k in range(count - 1))}
    if len(halved) == count:
        return tuple(sorted(halved))
    return tuple(round(i * last / (count - 1)) for i in range(count))


def train_tiny_checkpoints(path: Path | str, count: int, seed: int = 0) -> TrainedLora:
    """Train the tiny adapter again (as :func:`build_tiny` does, after building the base
    model there if needed) and keep ``count`` checkpoints in ``path/checkpoints``
    (:func:`checkpoint_steps`), replacing what was there once all are written."""
    steps = checkpoint_steps(count)
    root = Path(path).expanduser()
    paths = build_tiny(root, seed=seed)
    target = root / CHECKPOINTS_DIRNAME
    try:
        staging = Path(tempfile.mkdtemp(prefix=".tiny-checkpoints-", dir=root))
    except OSError as exc:
        raise ConfigError(f"cannot write into tiny model folder {str(root)!r}: {exc}") from exc
    try:
        built = staging / CHECKPOINTS_DIRNAME  # made with the user's umask, unlike mkdtemp's
        trained = train_lora(
            paths.base_dir, package_text("finetune.txt"), built, shape=TINY_LORA_SHAPE,
            plan=tiny_adapter_plan(seed, steps=steps[-1], save_at=steps[:-1]),
        )
        if target.exists():
            shutil.rmtree(target)
        os.replace(built, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return TrainedLora(
        checkpoints={s: target / p.name for s, p in trained.checkpoints.items()},
        losses=trained.losses, seconds=trained.seconds,
    )


def train_tokenizer(out_dir: Path) -> Any:
    """Train the byte-level BPE on the packaged corpus and save a transformers tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast as _Fast

    fast_cls: Any = _Fast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    lines = (package_text("corpus.txt") + "\n" + package_text("finetune.txt")).splitlines()
    tok.train_from_iterator(lines, trainer)
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
    )
    fast = fast_cls(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        model_max_length=CONTEXT,
    )
    fast.save_pretrained(str(out_dir))
    return fast


def _build_into(staging: Path, seed: int) -> None:
    try:
        import torch
        from transformers import LlamaConfig, LlamaForCausalLM
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ModelLoadError(
            f"building the tiny model needs torch, transformers and peft ({exc}); "
            "install them with: pip install 'swayscope[hf]'"
        ) from exc

    base_dir = staging / BASE_DIRNAME
    adapter_dir = staging / ADAPTER_DIRNAME
    with _quiet_build(seed):
        tokenizer = train_tokenizer(base_dir)
        _pin_tokenizer_class(base_dir)
        config = LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=HIDDEN,
            intermediate_size=INTERMEDIATE,
            num_hidden_layers=LAYERS,
            num_attention_heads=HEADS,
            num_key_value_heads=KV_HEADS,
            max_position_embeddings=CONTEXT,
            rms_norm_eps=1e-6,
            tie_word_embeddings=False,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
        corpus = _token_tensor(tokenizer, "corpus.txt")
        train_steps(
            model, list(model.parameters()), corpus,
            steps=BASE_STEPS, lr=BASE_LR, batch_size=BATCH, window=WINDOW, seed=seed,
        )
        model.save_pretrained(str(base_dir), safe_serialization=True)
    trained = train_lora(
        base_dir, package_text("finetune.txt"), staging / "adapter-checkpoints",
        shape=TINY_LORA_SHAPE, plan=tiny_adapter_plan(seed),
    )
    os.replace(trained.final, adapter_dir)


def _pin_tokenizer_class(base_dir: Path) -> None:
    """Name the class every transformers version loads (not a 5.x-only backend name)."""
    cfg_path = base_dir / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n", encoding="utf-8")


__all__ = [
    "ADAPTER_DIRNAME",
    "BASE_DIRNAME",
    "CHECKPOINTS_DIRNAME",
    "MARKER",
    "TINY_FORMAT",
    "TINY_LORA_SHAPE",
    "TinyModelPaths",
    "build_tiny",
    "checkpoint_steps",
    "package_text",
    "tiny_adapter_plan",
    "train_tiny_checkpoints",
    "train_tokenizer",
]
