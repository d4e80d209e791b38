"""The offline buffer: a bounded on-disk queue of batches that survives restarts and power loss.

SQLite in WAL mode with synchronous=FULL: a batch is on disk when `put` returns, and a crash at any
moment leaves the file consistent (the last transaction is either whole or absent). Each reading
has a stable key, so a batch replayed after a crash that came between "sent" and "deleted" is a
no-op at the ingest. Only batches that could not be delivered are written (SD cards wear).
"""

from __future__ import annotations

import json
import logging
import sqlite3
from pathlib import Path

log = logging.getLogger("pi.buffer")


class Buffer:
    def __init__(self, path: Path, *, max_readings: int = 1_000_000) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # One user at a time (the sender thread, then the main thread at shutdown), hence no thread check.
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("CREATE TABLE IF NOT EXISTS batches (id INTEGER PRIMARY KEY AUTOINCREMENT, "
                        "readings INTEGER NOT NULL, body TEXT NOT NULL)")
        self.max_readings = max_readings
        self.dropped = 0  # readings dropped at the bound since start
        # Readings held, counted once here and kept up to date: the sender asks on every step, and
        # a full buffer holds thousands of batches.
        self.readings = self.db.execute("SELECT coalesce(sum(readings), 0) FROM batches").fetchone()[0]

    def put(self, readings: list[dict]) -> None:
        """Store a batch (durable on return); at the bound, drop the oldest batches, loudly."""
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute("INSERT INTO batches (readings, body) VALUES (?, ?)", (len(readings), json.dumps(readings)))
            held = self.readings + len(readings)
            while held > self.max_readings:
                oldest, count = self.db.execute("SELECT id, readings FROM batches ORDER BY id LIMIT 1").fetchone()
                self.db.execute("DELETE FROM batches WHERE id = ?", (oldest,))
                held -= count
                self.dropped += count
                log.error("offline buffer full (%d readings): dropped the oldest batch of %d readings; %d dropped so far",
                          self.max_readings, count, self.dropped)
        self.readings = held  # after the commit: a failed transaction changes nothing

    def oldest(self) -> tuple[int, list[dict]] | None:
        if not self.readings:
            return None
        row = self.db.execute("SELECT id, body FROM batches ORDER BY id LIMIT 1").fetchone()
        return None if row is None else (row[0], json.loads(row[1]))

    def remove(self, batch_id: int) -> None:
        """After the ingest acknowledged the batch."""
        row = self.db.execute("DELETE FROM batches WHERE id = ? RETURNING readings", (batch_id,)).fetchone()
        if row:
            self.readings -= row[0]

    def size(self) -> int:
        return self.readings

    def close(self) -> None:
        self.db.close()
