"""One exception hierarchy for everything swayscope raises on purpose.

Subclasses also inherit the builtin exception a caller of the v0 module
would have caught (``ValueError``, ``RuntimeError``, ``OSError``), so code
written against v0 keeps working.
"""

from __future__ import annotations

#: The most characters of a value an error message echoes.
SHOWN_VALUE_CHARS = 80


def shown(value: object, limit: int = SHOWN_VALUE_CHARS) -> str:
    """``repr(value)`` capped at ``limit`` characters, for error messages.

    A value echoed whole can be megabytes (an expanded YAML alias, a huge list).
    """
    text = repr(value)
    if len(text) <= limit:
        return text
    return f"{text[: limit - 1]}… ({len(text)} characters)"


class SwayscopeError(Exception):
    """Base class: a message that says what was wrong, with the value, and what to do."""


class ConfigError(SwayscopeError, ValueError):
    """A setting or argument has a value swayscope cannot use."""


class TracePathError(SwayscopeError, OSError):
    """The JSONL trace file cannot be created or written."""


class OutputPathError(SwayscopeError, OSError):
    """A result or report file cannot be written where it was asked for."""


class BackendError(SwayscopeError, RuntimeError):
    """A backend broke its contract (wrong result count, bad view state)."""


class ModelLoadError(SwayscopeError):
    """A base model or adapter could not be found or loaded."""


class AdapterLoadError(ModelLoadError):
    """The adapter (not the base model) could not be found, read or attached: a checkpoint
    sweep reports it on the adapter's row and goes on with the next one."""


class ViewError(SwayscopeError, RuntimeError):
    """A view was entered while another one is active, or used after exit."""


class InputError(SwayscopeError, ValueError):
    """A prompt, top_k or other scoring input is invalid."""


class SpecError(SwayscopeError):
    """A suite spec file does not parse or does not validate."""


class TelemetryConfigError(SwayscopeError, ValueError):
    """A telemetry endpoint, address or port is unusable."""


__all__ = [
    "SHOWN_VALUE_CHARS",
    "AdapterLoadError",
    "BackendError",
    "ConfigError",
    "InputError",
    "ModelLoadError",
    "OutputPathError",
    "SpecError",
    "SwayscopeError",
    "TelemetryConfigError",
    "TracePathError",
    "ViewError",
    "shown",
]
