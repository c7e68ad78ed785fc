"""What a view sets the model's LoRA layers to, as a value that can travel to another process.

A view is a state of the adapter's LoRA layers: the adapter scaled by λ (``base``
is λ = 0, ``ft`` λ = 1) or a seeded null adapter in its place. :class:`ViewState`
says which; :meth:`ViewState.apply` puts a model's layers in that state. A worker
that holds its own copy of the model receives the state with each call and sets
its own layers, building a null adapter from its seeds (identical in every process).
"""

from __future__ import annotations

from dataclasses import dataclass

from swayscope.backends.hf.lora import LoraSwitch
from swayscope.backends.hf.null_adapters import NullAdapters


@dataclass(frozen=True, slots=True)
class ViewState:
    """The adapter times ``scale``, or (``null`` set) the null adapter of (seed,
    init_scale, rank_scale) in place of the adapter."""

    scale: float = 1.0
    null: tuple[int, float, float] | None = None

    def apply(self, lora: LoraSwitch, nulls: NullAdapters) -> None:
        """Put ``lora``'s layers in this state (null adapters from ``nulls``)."""
        if self.null is not None:
            lora.swap_in(nulls.params(*self.null))
        else:
            lora.scale(self.scale)


#: The resting state: the adapter as trained (every view's exit restores it).
TRAINED = ViewState()


__all__ = ["TRAINED", "ViewState"]
