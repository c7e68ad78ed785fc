"""Probes: each compares the base and fine-tuned views through one statistic."""
