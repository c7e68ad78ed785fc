"""Backends own views and forward passes: ``api`` (types), ``dummy`` (numpy), ``hf``, ``tiny``."""
