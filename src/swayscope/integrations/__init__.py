"""Bridges to other tools: read their suite files, instrument their runs."""
