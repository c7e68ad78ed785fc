"""What to train: the LoRA's shape and the training run's settings (plain, light dataclasses)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from swayscope.errors import ConfigError

#: The projection modules of a Llama-architecture attention block.
ATTENTION_PROJECTIONS: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")


@dataclass(frozen=True, slots=True)
class LoraShape:
    """Rank, alpha and target modules of a LoRA adapter (peft ``LoraConfig`` fields)."""

    rank: int = 8
    alpha: int = 16
    targets: tuple[str, ...] = ATTENTION_PROJECTIONS

    def __post_init__(self) -> None:
        _positive("LoRA rank", self.rank)
        _positive("LoRA alpha", self.alpha)
        if not self.targets:
            raise ConfigError("LoRA targets is empty; name the modules to adapt, e.g. q_proj")


@dataclass(frozen=True, slots=True)
class TrainingPlan:
    """A bounded run of AdamW steps of next-token loss on random windows of one text.

    ``save_at`` names the steps after which the adapter is saved (0: before the first
    step, i.e. peft's initialisation, whose ``lora_B`` is zero); the last step is always
    saved. ``threads`` pins torch's CPU threads for the run (None: leave them).
    """

    steps: int
    lr: float
    batch_size: int
    window: int
    seed: int = 0
    save_at: tuple[int, ...] = ()
    threads: int | None = None

    def __post_init__(self) -> None:
        _positive("training steps", self.steps)
        _positive("batch size", self.batch_size)
        _positive("training window", self.window)
        if not self.lr > 0:
            raise ConfigError(f"learning rate must be > 0; got {self.lr!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"training seed must be a non-negative integer; got {self.seed!r}")
        bad = [s for s in self.save_at if not 0 <= s <= self.steps]
        if bad:
            raise ConfigError(
                f"save_at steps {bad} are outside 0..{self.steps}; give steps of this run"
            )
        if self.threads is not None:
            _positive("training threads", self.threads)

    @property
    def checkpoint_steps(self) -> tuple[int, ...]:
        """Every step saved, ascending: ``save_at`` plus the last step."""
        return tuple(sorted({*self.save_at, self.steps}))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["save_at"] = list(self.checkpoint_steps)
        return data


def _positive(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{name} must be a positive integer; got {value!r}")


__all__ = ["ATTENTION_PROJECTIONS", "LoraShape", "TrainingPlan"]
