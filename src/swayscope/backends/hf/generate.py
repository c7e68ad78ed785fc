"""Greedy generation: token ids in, one :class:`~swayscope.backends.api.Generation` per prompt.

A batch runs as one ``model.generate`` call (transformers' own decoding loop, its
key/value cache, greedy: ``do_sample=False``, one beam, no repetition penalty or
other logits processing, whatever the model's ``generation_config`` says) with the
prompts **left-padded** and masked, so every row's new tokens start at the same
column. Each row stops on its own: at the model's end-of-sequence token, when its
decoded text contains a stop string, or at its token limit (``max_new_tokens``, or
less when the prompt is near the model's context); the call runs until every row has
stopped. A row's answer is what it gets alone (the tests compare it with
``model.generate`` on the unpadded prompt).

No shared-prefix reuse: each call computes its prompts from the start. Reusing stored
prefixes would need the forward pass's right-padded layout in a decoding loop;
identical requests are already answered from the cache.

:class:`GenerationSource` is what views generate through: the instrumentation's cache
(keyed also by the token limit and the stop strings), planned calls under the batch
limits, and a :class:`Generate` that computes them (:class:`Generator` in this
process, or a pool of workers).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import torch
from transformers import GenerationConfig, StoppingCriteria, StoppingCriteriaList

from swayscope.backends.api import (
    GENERATE_OP,
    FinishReason,
    Generation,
    check_generation,
    check_text,
    cut_at_stop,
)
from swayscope.backends.hf.forward import ForwardPass
from swayscope.backends.hf.planner import BatchLimits, plan_batches
from swayscope.backends.hf.prefix import TokenIds
from swayscope.backends.hf.tokenizer import TextEncoder
from swayscope.errors import BackendError, InputError
from swayscope.instrumentation import BackendInstrumentation


class Generate(Protocol):
    """What computes generations: :class:`Generator` in this process, or a pool of workers."""

    def generate(
        self,
        batch: Sequence[TokenIds],
        *,
        view_id: str | None = None,
        max_new_tokens: int,
        stop: tuple[str, ...],
    ) -> list[Generation]: ...


def eos_ids(model: Any, tokenizer: Any) -> list[int]:
    """The end-of-sequence token ids: the model's generation config's, else the tokenizer's."""
    config = getattr(model, "generation_config", None)
    value = getattr(config, "eos_token_id", None)
    if value is None:
        value = tokenizer.eos_token_id
    if value is None:
        return []
    return [int(v) for v in value] if isinstance(value, list | tuple) else [int(value)]


class _RowEnds(StoppingCriteria):
    """Where each row of a decoding loop ended: called by transformers after every step,
    it marks the rows that ended and remembers why."""

    def __init__(
        self,
        width: int,
        limits: list[int],
        eos: set[int],
        stop: tuple[str, ...],
        decode: Callable[[list[int]], str],
    ) -> None:
        self.width = width
        self.limits = limits
        self.eos = eos
        self.stop = stop
        self.decode = decode
        self.ends: list[tuple[int, FinishReason] | None] = [
            (0, "length") if limit == 0 else None for limit in limits
        ]
        self.steps = 0

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        self.steps += 1
        n = int(input_ids.shape[1]) - self.width
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        for b, end in enumerate(self.ends):
            if end is None:
                new = input_ids[b, self.width :].tolist()
                if new[-1] in self.eos:
                    self.ends[b] = (n, "eos")
                elif self.stop and cut_at_stop(self.decode(new), self.stop)[1]:
                    self.ends[b] = (n, "stop")
                elif n >= self.limits[b]:
                    self.ends[b] = (n, "length")
            done[b] = self.ends[b] is not None
        return done


class Generator:
    """Greedy generation with the model of a :class:`.ForwardPass` (under its lock)."""

    def __init__(self, forward: ForwardPass, encoder: TextEncoder) -> None:
        self.forward = forward
        self.encoder = encoder
        self.eos = eos_ids(forward.model, encoder.tokenizer)

    def decode(self, ids: list[int]) -> str:
        """The text of generated token ids (special tokens left out)."""
        text: str = self.encoder.tokenizer.decode(ids, skip_special_tokens=True)
        return text

    def generate(
        self,
        batch: Sequence[TokenIds],
        *,
        view_id: str | None = None,
        max_new_tokens: int,
        stop: tuple[str, ...],
    ) -> list[Generation]:
        """One ``model.generate`` call over ``batch`` under the active view (``view_id`` only
        names it)."""
        if self.forward.closed:
            raise BackendError("the backend is closed; build a new HFBackend")
        with self.forward.lock, torch.inference_mode():
            try:
                return self._generate([list(ids) for ids in batch], max_new_tokens, stop)
            except (BackendError, InputError):
                raise
            except Exception as exc:
                raise BackendError(
                    f"generation failed on {len(batch)} prompt(s) of up to "
                    f"{max(map(len, batch))} tokens: {type(exc).__name__}: {exc}"
                ) from exc

    def _generate(
        self, batch: list[list[int]], max_new_tokens: int, stop: tuple[str, ...]
    ) -> list[Generation]:
        context = self.encoder.context_length
        limits = [
            max_new_tokens if context is None else max(0, min(max_new_tokens, context - len(ids)))
            for ids in batch
        ]
        width = max(len(ids) for ids in batch)
        pad = self.forward.pad_id
        input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for b, ids in enumerate(batch):
            input_ids[b, width - len(ids) :] = torch.as_tensor(ids, dtype=torch.long)
            mask[b, width - len(ids) :] = 1
        ends = _RowEnds(width, limits, set(self.eos), stop, self.decode)
        steps = max(limits)
        if steps == 0:
            return [Generation("", 0, "length", len(ids)) for ids in batch]
        config = GenerationConfig(  # type: ignore[no-untyped-call]
            max_new_tokens=steps,
            do_sample=False,
            num_beams=1,
            repetition_penalty=1.0,
            no_repeat_ngram_size=0,
            pad_token_id=pad,
            eos_token_id=self.eos or None,
        )
        device = self.forward.device
        out = self.forward.model.generate(
            input_ids=input_ids.to(device),
            attention_mask=mask.to(device),
            generation_config=config,
            stopping_criteria=StoppingCriteriaList([ends]),
        )
        self.forward.report(model_invocations=ends.steps)
        results = []
        for b, ids in enumerate(batch):
            n, finish = ends.ends[b] or (limits[b], "length")
            new = out[b, width : width + n].tolist()
            text = cut_at_stop(self.decode(new), stop)[0]
            results.append(Generation(text, len(new), finish, len(ids)))
        return results


class GenerationSource:
    """Generations for views, through the instrumentation core (cache, batching, events).

    Args:
        inst: the instrumentation every lookup and call goes through.
        encoder: tokenizes and checks prompts.
        generate: computes the generations.
        limits: the batch limits calls are planned within (a row costs its prompt plus
            its new tokens; a call, its overhead once per generated token).
        key_model: view id → the model identity its cache entries are keyed by.
        propagate: ``generate`` computes in other processes (its trace context goes along).
    """

    def __init__(
        self,
        inst: BackendInstrumentation,
        encoder: TextEncoder,
        generate: Generate,
        limits: BatchLimits,
        *,
        key_model: Callable[[str], str | None] = lambda view_id: None,
        propagate: bool = False,
    ) -> None:
        self._inst = inst
        self._encoder = encoder
        self._generate = generate
        self._limits = limits
        self._key_model = key_model
        self._propagate = propagate

    def generations(
        self,
        view_id: str,
        prompts: Sequence[str],
        max_new_tokens: int,
        stop: Sequence[str],
    ) -> list[Generation]:
        """The greedy generations of ``prompts`` under ``view_id``; misses go out in
        planned calls."""
        for p in prompts:
            check_text(p)
        stops = check_generation(max_new_tokens, stop)
        encoder, generate, limits = self._encoder, self._generate, self._limits
        ids: dict[int, list[int]] = {}

        def plan(misses: list[int]) -> list[list[int]]:
            for i in misses:
                ids.setdefault(i, encoder.checked_ids(prompts[i]))
            # Each generated token is a model call: a generate call costs its overhead
            # once per step, so padding a row is cheap next to a call more.
            return plan_batches(
                {i: len(ids[i]) + max_new_tokens for i in misses},
                max_batch_size=limits.max_batch_size,
                max_batch_tokens=limits.max_batch_tokens,
                call_overhead_tokens=limits.call_overhead_tokens * max_new_tokens,
            )

        def compute(indices: list[int]) -> list[Generation]:
            batch = [ids.get(i) or encoder.checked_ids(prompts[i]) for i in indices]
            return generate.generate(
                batch, view_id=view_id, max_new_tokens=max_new_tokens, stop=stops
            )

        return self._inst.cached_batch(
            GENERATE_OP,
            view_id,
            prompts,
            0,
            compute,
            plan=plan,
            key_model=self._key_model(view_id),
            propagate=self._propagate,
            key_params=(max_new_tokens, stops),
        )


__all__ = ["Generate", "GenerationSource", "Generator", "eos_ids"]
