"""Exporters: JSONL (built in), OpenTelemetry (extra ``otel``), Prometheus (extra ``prometheus``).

Each exporter module imports its library only when it is imported itself.
"""
