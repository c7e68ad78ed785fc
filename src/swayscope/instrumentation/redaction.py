"""Keep prompt text out of error messages that leave the process.

Our own messages name prompts by hash and index. An exception from a library
(a tokenizer, the model) may still quote its input, whole or cut short; before
such a message reaches a span, a metric, a JSONL line, the result or a log,
every prompt of the failing call is replaced by its hash.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

#: A quoted piece of a prompt this long or longer is taken for the prompt and replaced.
MIN_QUOTED_CHARS = 12


def redact_texts(message: str, texts: Iterable[str], name: Callable[[str], str]) -> str:
    """``message`` with each of ``texts`` (or any leading or trailing piece of one, at least
    :data:`MIN_QUOTED_CHARS` long, as a message that cuts a quote short shows it)
    replaced by ``<prompt NAME>``."""
    for text in sorted(set(texts), key=len, reverse=True):
        if not text:
            continue
        label = f"<prompt {name(text)}>"
        if text in message:
            message = message.replace(text, label)
            continue
        if len(text) < MIN_QUOTED_CHARS:
            continue
        message = _replace_piece(message, text, text[:MIN_QUOTED_CHARS], label, forward=True)
        message = _replace_piece(message, text, text[-MIN_QUOTED_CHARS:], label, forward=False)
    return message


def _replace_piece(message: str, text: str, probe: str, label: str, *, forward: bool) -> str:
    """Replace the longest run of ``text`` around each occurrence of ``probe`` in ``message``."""
    out: list[str] = []
    pos = 0
    while (at := message.find(probe, pos)) >= 0:
        if forward:
            n = 0
            while at + n < len(message) and n < len(text) and message[at + n] == text[n]:
                n += 1
            start, end = at, at + n
        else:
            end = at + len(probe)
            n = 0
            while end - n - 1 >= 0 and n < len(text) and message[end - n - 1] == text[-n - 1]:
                n += 1
            start = end - n
        out.append(message[pos:start] + label)
        pos = end
    out.append(message[pos:])
    return "".join(out)


__all__ = ["MIN_QUOTED_CHARS", "redact_texts"]
