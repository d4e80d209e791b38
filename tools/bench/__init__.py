"""Benchmarks, each a command that prints its figures: `python -m tools.bench.<name> --help`."""
