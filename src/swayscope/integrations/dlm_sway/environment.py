"""The environment variables ``swayscope sway`` hands to dlm-sway (defined once, here)."""

#: The opt-in, set by ``swayscope sway``: JSON ``{"settings": {name: value},
#: "sources": {name: flag}, "requirements": {extra: [requirement, …]}}`` (the packages of
#: swayscope's telemetry extras, named when dlm-sway's environment lacks one).
TELEMETRY_ENV = "SWAYSCOPE_SWAY_TELEMETRY"
#: pid of the process that serves the run's metrics (set by the first one to start them).
OWNER_ENV = "SWAYSCOPE_SWAY_OWNER"

__all__ = ["OWNER_ENV", "TELEMETRY_ENV"]
