"""Development tools: benchmarks, the load generator, builders of test peers. Run from the
repository root (`python -m tools.<name>`); nothing here is deployed."""
