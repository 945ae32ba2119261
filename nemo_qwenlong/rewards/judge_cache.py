"""Persistent SQLite cache of judge verdicts, keyed by (prompt version, judge model, question, prediction, gold).

Repeated rollouts of the same answer and re-runs after a crash never pay for the same judgement
twice. Only real verdicts are stored; failures are retried next time. Safe for several processes
(WAL mode, short transactions).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS verdicts (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    question TEXT NOT NULL,
    prediction TEXT NOT NULL,
    gold TEXT NOT NULL,
    verdict INTEGER NOT NULL,
    reply TEXT NOT NULL,
    created REAL NOT NULL
)
"""


def cache_key(prompt_version: str, model: str, question: str, prediction: str, gold: str) -> str:
    payload = json.dumps([prompt_version, model, question, prediction, gold], ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class VerdictCache:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute(_SCHEMA)

    def get(self, key: str) -> bool | None:
        row = self._conn.execute("SELECT verdict FROM verdicts WHERE key = ?", (key,)).fetchone()
        return None if row is None else bool(row[0])

    def put(self, key: str, *, model: str, question: str, prediction: str, gold: str, verdict: bool, reply: str) -> None:
        self._conn.execute(
            "INSERT OR REPLACE INTO verdicts VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (key, model, question, prediction, gold, int(verdict), reply, time.time()),
        )

    def __len__(self) -> int:
        return int(self._conn.execute("SELECT COUNT(*) FROM verdicts").fetchone()[0])

    def close(self) -> None:
        self._conn.close()
