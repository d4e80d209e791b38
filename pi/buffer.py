"""The agent's queue on disk: every sampled reading, until the ingest acknowledged it.

SQLite in WAL mode. The sampler puts each tick's readings here before anything else happens to
them, and the sender takes its batches from here and deletes them once acknowledged, so a
`kill -9` (or a crash) at any moment loses nothing that was sampled: a committed transaction is
in the database file or its WAL, which survive the process. Against a power cut the `synchronous`
mode decides (`agent.durability`):

- "power-cut" (synchronous=FULL): every put is fsynced before `put` returns; a power cut loses at
  most the tick being sampled. Costs an fsync per tick (measured by `python -m tools.bench.agent`).
- "crash" (synchronous=NORMAL, the default): no fsync per put; the WAL reaches the disk at
  checkpoints and with the kernel's writeback (about every 5-30 s): a power cut can lose the
  readings of the last seconds that were not yet delivered. Flash (SD cards) is written about as
  often as the kernel flushes, not ten times a second.

Each reading keeps its key, so a batch replayed after a crash between "sent" and "deleted" is a
no-op at the ingest. Bounded: at `max_readings` the oldest rows are dropped, counted and logged.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from pathlib import Path

log = logging.getLogger("pi.buffer")

SYNCHRONOUS = {"power-cut": "FULL", "crash": "NORMAL"}


class Buffer:
    def __init__(self, path: Path, *, max_readings: int = 1_000_000, durability: str = "crash") -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # The sampler and the sender share one connection; the lock keeps their transactions apart.
        self.lock = threading.Lock()
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(f"PRAGMA synchronous={SYNCHRONOUS[durability]}")
        self.db.execute("CREATE TABLE IF NOT EXISTS batches (id INTEGER PRIMARY KEY AUTOINCREMENT, "
                        "readings INTEGER NOT NULL, body TEXT NOT NULL)")
        columns = {row[1] for row in self.db.execute("PRAGMA table_info(batches)")}
        if "first_ts" not in columns:  # buffers written before readings went to disk at once
            self.db.execute("ALTER TABLE batches ADD COLUMN first_ts INTEGER")
        self.max_readings = max_readings
        self.dropped = 0  # readings dropped at the bound since start
        # Readings held, counted once here and kept up to date: the sender asks on every step.
        self.readings = self.db.execute("SELECT coalesce(sum(readings), 0) FROM batches").fetchone()[0]

    def put(self, readings: list[dict]) -> None:
        """Store readings (on disk, as `durability` says, when it returns); at the bound, drop
        the oldest rows, loudly."""
        first_ts = min((r["ts"] for r in readings if isinstance(r.get("ts"), int)), default=None)
        with self.lock:
            with self.db:
                self.db.execute("BEGIN IMMEDIATE")
                self.db.execute("INSERT INTO batches (readings, body, first_ts) VALUES (?, ?, ?)",
                                (len(readings), json.dumps(readings), first_ts))
                held = self.readings + len(readings)
                while held > self.max_readings:
                    oldest, count = self.db.execute("SELECT id, readings FROM batches ORDER BY id LIMIT 1").fetchone()
                    self.db.execute("DELETE FROM batches WHERE id = ?", (oldest,))
                    held -= count
                    self.dropped += count
                    log.error("offline buffer full (%d readings): dropped the oldest %d readings; %d dropped so far",
                              self.max_readings, count, self.dropped)
            self.readings = held  # after the commit: a failed transaction changes nothing

    def take(self, limit: int) -> tuple[list[int], list[dict]]:
        """The oldest rows, up to `limit` readings (at least one row): their ids and readings."""
        ids, readings = [], []
        with self.lock:
            for row_id, count, body in self.db.execute("SELECT id, readings, body FROM batches ORDER BY id"):
                if ids and len(readings) + count > limit:
                    break
                ids.append(row_id)
                readings.extend(json.loads(body))
        return ids, readings

    def oldest(self) -> tuple[int, list[dict]] | None:
        ids, readings = self.take(1)
        return (ids[0], readings) if ids else None

    def oldest_ts(self) -> int | None:
        """The sampling time of the oldest row (None for rows of an older agent: due at once)."""
        with self.lock:
            row = self.db.execute("SELECT first_ts FROM batches ORDER BY id LIMIT 1").fetchone()
        return None if row is None else (row[0] if row[0] is not None else 0)

    def newest_ts(self) -> int:
        with self.lock:
            return self.db.execute("SELECT coalesce(max(first_ts), 0) FROM batches").fetchone()[0]

    def remove(self, *batch_ids: int) -> None:
        """After the ingest acknowledged (or refused for good) these rows."""
        with self.lock:
            with self.db:
                self.db.execute("BEGIN IMMEDIATE")
                removed = sum(row[0] for batch_id in batch_ids
                              for row in self.db.execute("DELETE FROM batches WHERE id = ? RETURNING readings", (batch_id,)))
            self.readings -= removed

    def size(self) -> int:
        return self.readings

    def close(self) -> None:
        with self.lock:
            self.db.close()
