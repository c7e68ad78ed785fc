"""Exit codes of every command: the contract scripts and CI jobs rely on."""

#: Every probe passed (warn and skip count as passed).
EXIT_PASS = 0
#: A probe failed or raised.
EXIT_PROBE_FAILED = 1
#: Bad input, or a run-level error (an interrupted run included).
EXIT_ERROR = 2

__all__ = ["EXIT_ERROR", "EXIT_PASS", "EXIT_PROBE_FAILED"]
