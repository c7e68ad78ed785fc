"""Null adapters: random LoRAs of the adapter's shape, the noise floor of "any adapter this size".

For every LoRA parameter of the adapter (each module's ``lora_A`` and ``lora_B``)
a null adapter has a Gaussian tensor with the same root-mean-square as the
adapter's tensor, drawn from a ``torch.Generator`` on the CPU seeded by
(``seed``, module name, A/B), so it is identical in every process. ``lora_B`` is
multiplied by ``init_scale``, so the update ``B·A`` scales linearly with it.
``rank_scale`` scales the *rank*: the null has ``max(1, round(r * rank_scale))``
rank components per module at the same per-entry size and the adapter's own
``scaling`` (so the update's norm grows like ``sqrt(rank_scale)``).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence

import torch

from swayscope.backends.api import null_view_id
from swayscope.backends.hf.lora import B_FAMILIES, RANK_DIM, LoraSlot


def derived_seed(*parts: object) -> int:
    """A 63-bit generator seed from ``parts``, the same on every machine and process."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def build_null(
    slots: Sequence[LoraSlot], seed: int, init_scale: float, rank_scale: float
) -> list[torch.nn.Parameter]:
    """One random replacement per slot, in slot order, on each slot's device and dtype."""
    params: list[torch.nn.Parameter] = []
    with torch.no_grad():
        for s in slots:
            dim = RANK_DIM[s.family]
            shape = list(s.param.shape)
            shape[dim] = max(1, round(shape[dim] * rank_scale))
            real = s.param.detach().to(device="cpu", dtype=torch.float32)
            rms = float(real.pow(2).mean().sqrt()) if real.numel() else 0.0
            scale = rms * (init_scale if s.family in B_FAMILIES else 1.0)
            gen = torch.Generator(device="cpu").manual_seed(
                derived_seed("swayscope-null", seed, s.module_name, s.family)
            )
            noise = torch.randn(shape, generator=gen, dtype=torch.float32) * scale
            tensor = noise.to(device=s.param.device, dtype=s.param.dtype)
            params.append(torch.nn.Parameter(tensor, requires_grad=False))
    return params


class NullAdapters:
    """Null adapters by view id, built once and kept; the least recently used beyond
    ``max_kept`` are dropped (and rebuilt identically when asked for again)."""

    def __init__(self, slots: Sequence[LoraSlot], max_kept: int) -> None:
        self.slots = tuple(slots)
        self.max_kept = max_kept
        self._built: OrderedDict[str, list[torch.nn.Parameter]] = OrderedDict()

    def params(
        self, seed: int, init_scale: float = 1.0, rank_scale: float = 1.0
    ) -> list[torch.nn.Parameter]:
        """The null adapter's parameters, one per slot in slot order (see the module doc)."""
        view_id = null_view_id(seed, init_scale, rank_scale)
        params = self._built.get(view_id)
        if params is not None:
            self._built.move_to_end(view_id)
            return params
        params = build_null(self.slots, seed, float(init_scale), float(rank_scale))
        self._built[view_id] = params
        while len(self._built) > self.max_kept:
            self._built.popitem(last=False)
        return params

    def tensors(
        self, seed: int, init_scale: float = 1.0, rank_scale: float = 1.0
    ) -> dict[str, torch.Tensor]:
        """The null adapter's tensors by ``module.family`` name."""
        params = self.params(seed, init_scale, rank_scale)
        return {s.name: p.detach() for s, p in zip(self.slots, params, strict=True)}

    def clear(self) -> None:
        self._built.clear()

    def __len__(self) -> int:
        return len(self._built)


__all__ = ["NullAdapters", "build_null", "derived_seed"]
