"""The ingest service: authenticated HTTP batches of readings, bulk-inserted into CrateDB.

A batch is acknowledged only after CrateDB committed every reading of it. This package stands
alone: it imports nothing from `components` or `stack`.
"""
