"""Train a LoRA adapter on a base model folder, saving it at the steps a plan names.

:func:`train_lora` writes one PEFT adapter folder per checkpoint step::

    OUT/step-00000/   adapter_config.json, adapter_model.safetensors   (peft's init: B = 0)
    OUT/step-00040/   ...                                              (after 40 steps)

Everything is offline: the base folder is loaded from disk, the text is given.
Deterministic for a plan on one machine: the LoRA initialisation and the data
order come from ``plan.seed`` (torch's global RNG is forked and restored).
"""

from __future__ import annotations

import json
import os
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from swayscope.errors import ModelLoadError
from swayscope.training.loop import StepCallback, train_steps
from swayscope.training.plan import LoraShape, TrainingPlan

#: Name a checkpoint folder by its step, zero-padded so folders sort in step order.
CHECKPOINT_FORMAT = "step-{step:05d}"


def checkpoint_name(step: int) -> str:
    """``step-00040`` for step 40."""
    return CHECKPOINT_FORMAT.format(step=step)


@dataclass(frozen=True, slots=True)
class TrainedLora:
    """What :func:`train_lora` wrote: a folder per checkpoint step, and how training went."""

    checkpoints: dict[int, Path]
    losses: list[float]
    seconds: float
    """Wall time of the training steps and checkpoint saves (not of loading the model)."""

    @property
    def final(self) -> Path:
        """The adapter after the last step."""
        return self.checkpoints[max(self.checkpoints)]


@contextmanager
def offline_and_quiet() -> Iterator[None]:
    """No hub access and no transformers progress bars or warnings; all restored after."""
    from transformers.utils import logging

    hf_logging: Any = logging  # untyped functions
    saved_env = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    progress = hf_logging.is_progress_bar_enabled()
    verbosity = hf_logging.get_verbosity()
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if progress:
            hf_logging.enable_progress_bar()
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextmanager
def seeded_threads(seed: int, threads: int | None) -> Iterator[None]:
    """torch's global RNG seeded (and restored after), and its CPU thread count pinned."""
    import torch

    saved = torch.get_num_threads()
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            if threads is not None:
                torch.set_num_threads(threads)
            yield
    finally:
        torch.set_num_threads(saved)


def lora_config(shape: LoraShape) -> Any:
    """The peft ``LoraConfig`` of ``shape`` (no dropout, no bias, causal LM)."""
    from peft import LoraConfig

    return LoraConfig(
        r=shape.rank,
        lora_alpha=shape.alpha,
        target_modules=list(shape.targets),
        lora_dropout=0.0,
        bias="none",
        task_type="CAUSAL_LM",
    )


def text_token_ids(tokenizer: Any, text: str) -> Any:
    """``text`` as one long tensor of token ids, without special tokens or length warnings."""
    import torch

    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        ids = backend.encode(text, add_special_tokens=False).ids
    else:
        ids = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
    return torch.tensor(ids, dtype=torch.long)


def save_adapter(peft_model: Any, out_dir: Path, base_name: str) -> None:
    """Save the adapter as safetensors, with a config that names ``base_name`` as its base
    (never the path it was trained from) and lists its target modules sorted."""
    peft_model.save_pretrained(str(out_dir), safe_serialization=True)
    pin_adapter_config(out_dir, base_name)
    (out_dir / "README.md").unlink(missing_ok=True)


def pin_adapter_config(adapter_dir: Path, base_name: str) -> None:
    """Make ``adapter_config.json`` the same wherever it was written (see :func:`save_adapter`)."""
    cfg_path = adapter_dir / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    cfg["base_model_name_or_path"] = base_name
    if isinstance(cfg.get("target_modules"), list):
        cfg["target_modules"] = sorted(cfg["target_modules"])  # peft writes set order
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def train_lora(
    base_dir: Path,
    text: str,
    out_dir: Path,
    *,
    shape: LoraShape,
    plan: TrainingPlan,
    on_step: StepCallback | None = None,
) -> TrainedLora:
    """Train a LoRA of ``shape`` on ``text`` over the base model in ``base_dir`` (fp32, CPU).

    Writes ``out_dir/step-NNNNN/`` for every step of ``plan.checkpoint_steps`` and
    returns them. ``on_step(step, loss)`` is called after each step (a progress bar).
    """
    try:
        import torch
        from peft import get_peft_model
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ModelLoadError(
            f"training an adapter needs torch, transformers and peft ({exc}); "
            "install them with: pip install 'swayscope[hf]'"
        ) from exc

    base_dir = Path(base_dir)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    checkpoints: dict[int, Path] = {}
    save_steps = set(plan.checkpoint_steps)
    with offline_and_quiet(), seeded_threads(plan.seed, plan.threads):
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(base_dir))
            model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(
                f"cannot load the base model from {str(base_dir)!r} for training: {exc}"
            ) from exc
        ids = text_token_ids(tokenizer, text)
        torch.manual_seed(plan.seed + 1)
        peft_model = get_peft_model(model, lora_config(shape))

        def save(step: int) -> None:
            path = out_dir / checkpoint_name(step)
            save_adapter(peft_model, path, base_dir.name)
            checkpoints[step] = path

        def after_step(step: int, loss: float) -> None:
            if step in save_steps:
                save(step)
            if on_step is not None:
                on_step(step, loss)

        if 0 in save_steps:
            save(0)
        trainable = [p for p in peft_model.parameters() if p.requires_grad]
        t0 = time.perf_counter()
        losses = train_steps(
            peft_model, trainable, ids,
            steps=plan.steps, lr=plan.lr, batch_size=plan.batch_size, window=plan.window,
            seed=plan.seed + 1, on_step=after_step,
        )
        seconds = time.perf_counter() - t0
    return TrainedLora(checkpoints=checkpoints, losses=losses, seconds=seconds)


__all__ = [
    "CHECKPOINT_FORMAT",
    "TrainedLora",
    "checkpoint_name",
    "lora_config",
    "offline_and_quiet",
    "pin_adapter_config",
    "save_adapter",
    "seeded_threads",
    "text_token_ids",
    "train_lora",
]
