"""The adapter's LoRA layers inside the PEFT model, and the switch that sets them per view.

Views never copy or rewrite the base weights. :class:`LoraSwitch` turns every LoRA
layer off (``base``), multiplies each layer's ``scaling`` by λ (``scaled``), or puts
other tensors in place of the adapter's ``lora_A``/``lora_B`` parameters (``null``);
:meth:`LoraSwitch.restore` writes the saved ``scaling`` floats back and puts the
adapter's own parameter objects back, so restoration is exact.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

#: Adapter name the real LoRA adapter is attached under in the PEFT model.
ADAPTER = "default"
#: LoRA parameter families and the dimension that holds the rank.
RANK_DIM = {"lora_A": 0, "lora_embedding_A": 0, "lora_B": 1, "lora_embedding_B": 1}
#: The families that multiply last in the update ``B·A``.
B_FAMILIES = frozenset({"lora_B", "lora_embedding_B"})


@dataclass(frozen=True, slots=True)
class LoraSlot:
    """One LoRA parameter of the real adapter (what a null adapter replaces)."""

    module_name: str
    layer: Any
    family: str
    param: torch.nn.Parameter

    @property
    def name(self) -> str:
        """``module.family``, e.g. ``base_model.model.model.layers.0.self_attn.q_proj.lora_A``."""
        return f"{self.module_name}.{self.family}"

    @property
    def rank(self) -> int:
        return int(self.param.shape[RANK_DIM[self.family]])


def collect_slots(model: Any) -> list[LoraSlot]:
    """Every LoRA parameter the adapter attached to ``model``, in module order."""
    from peft.tuners.lora import LoraLayer

    slots: list[LoraSlot] = []
    for name, module in model.named_modules():
        if not isinstance(module, LoraLayer):
            continue
        for family in RANK_DIM:
            container = getattr(module, family, None)
            if container is None or ADAPTER not in container:
                continue
            entry = container[ADAPTER]
            param = entry if isinstance(entry, torch.nn.Parameter) else entry.weight
            slots.append(LoraSlot(name, module, family, param))
    return slots


class LoraSwitch:
    """Puts the model's LoRA layers in a view's state, and back to the adapter as trained."""

    def __init__(self, slots: Sequence[LoraSlot]) -> None:
        self.slots: tuple[LoraSlot, ...] = tuple(slots)
        self.layers: tuple[Any, ...] = tuple({id(s.layer): s.layer for s in slots}.values())
        self._trained = {id(layer): dict(layer.scaling) for layer in self.layers}

    @property
    def rank(self) -> int:
        """Rank of the adapter (of its first LoRA layer)."""
        return self.slots[0].rank

    def trained_scaling(self, layer: Any) -> dict[str, float]:
        """A copy of ``layer``'s ``scaling`` as the adapter was trained."""
        return dict(self._trained[id(layer)])

    def restore(self) -> None:
        """The resting state: the adapter as trained, enabled."""
        for s in self.slots:
            _put(s, s.param)
        for layer in self.layers:
            layer.scaling.clear()
            layer.scaling.update(self._trained[id(layer)])
        self._set_enabled(True)

    def scale(self, lam: float) -> None:
        """Every LoRA ``scaling`` times λ; λ = 0 switches the layers off, λ = 1 is as trained."""
        self.restore()
        if lam == 0.0:
            self._set_enabled(False)
            return
        if lam == 1.0:
            return
        for layer in self.layers:
            layer.scaling[ADAPTER] = self._trained[id(layer)][ADAPTER] * lam

    def swap_in(self, params: Sequence[torch.nn.Parameter]) -> None:
        """``params`` (one per slot, in slot order) in place of the adapter's own parameters."""
        self.restore()
        for slot, param in zip(self.slots, params, strict=True):
            _put(slot, param)

    def _set_enabled(self, enabled: bool) -> None:
        switched = [layer for layer in self.layers if layer.disable_adapters == enabled]
        for layer in switched:
            layer.enable_adapters(enabled)
        if enabled and switched:
            # enable_adapters marks the adapter trainable; inference keeps every weight frozen.
            for s in self.slots:
                s.param.requires_grad_(False)


def _put(slot: LoraSlot, param: torch.nn.Parameter) -> None:
    container = getattr(slot.layer, slot.family)
    if isinstance(container, torch.nn.ParameterDict):
        if container[ADAPTER] is not param:
            container[ADAPTER] = param
    elif container[ADAPTER].weight is not param:
        container[ADAPTER].weight = param


__all__ = ["ADAPTER", "B_FAMILIES", "RANK_DIM", "LoraSlot", "LoraSwitch", "collect_slots"]
