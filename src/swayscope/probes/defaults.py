"""Defaults the probes (and the demo suite) use when a spec leaves a field out.

The prompts are short and varied on purpose: an adapter that changes the model
should move the next-token distribution on most of them, and a probe that
reuses the same prompts as another probe gets them from the forward cache.
"""

from __future__ import annotations

from collections.abc import Sequence

#: Short, varied prompts: instructions, questions, code, lists, dialogue, prose.
DEFAULT_PROMPTS: tuple[str, ...] = (
    "The capital of France is",
    "Q: What is two plus two?\nA:",
    "Once upon a time, in a small village by the sea,",
    "def fibonacci(n):",
    "Translate to German: Good morning, how are you?",
    "The three primary colours are",
    "User: Can you recommend a good book?\nAssistant:",
    "In summary, the main advantage of renewable energy is",
    "Ingredients for a simple pancake recipe:\n1.",
    "The quick brown fox",
    "Dear Sir or Madam, I am writing to",
    "import numpy as np\nx = np.",
    "The most important thing to remember when learning to swim is",
    "Step 1: Preheat the oven to",
    "Water boils at a temperature of",
    "My favourite season of the year is",
)

#: Neutral filler prepended by ``prompt_collapse``: plain, topic-free prose (165 words).
NEUTRAL_CONTEXT: str = (
    "The following text is a plain description of an ordinary day. In the morning "
    "the weather was mild and the sky was a pale grey. People walked along the street "
    "on their way to work, and a few shops opened their doors at the usual hour. "
    "A bus stopped at the corner, waited for a minute, and drove on. Someone swept "
    "the pavement in front of a small bakery. Later in the day the clouds thinned "
    "and the light became brighter. In a nearby park, a few benches stood under the "
    "trees, and a gardener trimmed the edges of the lawn. Children passed by on their "
    "way home from school. The traffic grew heavier in the late afternoon and then "
    "slowly eased. In the evening the street lamps came on one after another, the "
    "shops closed, and the windows of the houses lit up. Nothing unusual happened, "
    "and the night was quiet. The next day began in much the same way as this one did."
)

#: λ values of the default ablation sweep (0 is base, 1 is the fine-tune).
DEFAULT_LAMBDAS: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25)

#: Tokens of neutral context prepended by the default ``prompt_collapse`` sweep.
DEFAULT_CONTEXT_TOKENS: tuple[int, ...] = (0, 16, 32, 64, 128)

#: ``prompt_collapse`` uses fewer prompts by default (it scores each at every
#: context length); they are the first ones of :data:`DEFAULT_PROMPTS`, so the
#: context-length-0 row is served from ``delta_kl``'s cache entries.
DEFAULT_COLLAPSE_PROMPTS: tuple[str, ...] = DEFAULT_PROMPTS[:8]


def check_prompts(prompts: Sequence[str], field: str = "prompts") -> tuple[str, ...]:
    """Validate a prompt list for a spec: non-empty, every prompt a non-blank string.

    Raises ``ValueError`` (pydantic turns it into a ValidationError naming the field).
    """
    if len(prompts) == 0:
        raise ValueError(
            f"{field} is empty; give at least one prompt, or leave {field} out to use "
            f"the {len(DEFAULT_PROMPTS)} default prompts"
        )
    for i, p in enumerate(prompts):
        if not p.strip():
            raise ValueError(
                f"{field}[{i}] is blank ({p!r}); every prompt needs at least one "
                "non-space character"
            )
    return tuple(prompts)


def context_words(n_words: int, text: str = NEUTRAL_CONTEXT) -> str:
    """The first ``n_words`` words of ``text``, cycling through it if it is shorter."""
    words = text.split()
    if n_words <= 0 or not words:
        return ""
    reps = -(-n_words // len(words))
    return " ".join((words * reps)[:n_words])


__all__ = [
    "DEFAULT_COLLAPSE_PROMPTS",
    "DEFAULT_CONTEXT_TOKENS",
    "DEFAULT_LAMBDAS",
    "DEFAULT_PROMPTS",
    "NEUTRAL_CONTEXT",
    "check_prompts",
    "context_words",
]
