"""Suites: the YAML spec, the runner that executes it, the result and its reports."""
