"""Collect runs' `results.json` into comparison tables."""
