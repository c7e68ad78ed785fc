"""A scripted dummy backend for probe tests (a uniquely named module; tests/ is on sys.path):
chosen answers for some ops, through the real cache and batching, so a test can build the
model a probe must recognise (one that recites its training text, one that flips
preferences, ...)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from swayscope.backends.api import Generation, RollingLogprob, cut_at_stop
from swayscope.backends.dummy import DummyBackend, DummyView


@dataclass
class Script:
    """Answers by view id; an op left None keeps the dummy's own model."""

    generate: Callable[[str, str], str] | None = None
    """(view id, prompt) → the generated text."""
    logprob: Callable[[str, str, str], float] | None = None
    """(view id, prompt, completion) → log p(completion | prompt)."""
    rolling: Callable[[str, str], float] | None = None
    """(view id, text) → the log-probability of each of its tokens."""


class ScriptedView(DummyView):
    script: ClassVar[Script] = Script()

    def _compute_generation(
        self, prompt: str, max_new_tokens: int, stop: tuple[str, ...]
    ) -> Generation:
        if self.script.generate is None:
            return super()._compute_generation(prompt, max_new_tokens, stop)
        text, stopped = cut_at_stop(self.script.generate(self.id, prompt), stop)
        return Generation(text, max(1, len(text) // 4), "stop" if stopped else "length", 1)

    def _compute_logprob_of(self, prompt: str, completion: str) -> float:
        if self.script.logprob is None:
            return super()._compute_logprob_of(prompt, completion)
        return self.script.logprob(self.id, prompt, completion)

    def _compute_rolling_logprob(self, text: str) -> RollingLogprob:
        if self.script.rolling is None:
            return super()._compute_rolling_logprob(text)
        n = len(text.encode())
        value = self.script.rolling(self.id, text)
        return RollingLogprob(
            np.zeros(n, dtype=np.int64), np.full(n - 1, value, dtype=np.float64), n
        )


def scripted_backend(script: Script, **kwargs: object) -> DummyBackend:
    """A dummy backend whose views answer from ``script``."""
    view = type("View", (ScriptedView,), {"script": script})
    backend_class = type("ScriptedBackend", (DummyBackend,), {"view_class": view})
    backend: DummyBackend = backend_class(**kwargs)
    return backend
