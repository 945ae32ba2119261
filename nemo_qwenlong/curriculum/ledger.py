"""Difficulty ledger: the rollout rewards seen per item (count, mean, last step, stage).

Difficulty = 1 / mean reward (spec §5, Eq. 10 as reported); an item whose mean is 0 gets
`zero_reward_difficulty` (1/0 is undefined; our choice, configurable). Persisted with the
checkpoint (`state_dict`) and exportable as CSV or Parquet.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from nemo_qwenlong.fsio import atomic_write_parquet, atomic_write_text


@dataclass
class LedgerEntry:
    count: int = 0
    total: float = 0.0
    last_step: int = -1
    stage: str = ""

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0


def difficulty(mean_reward: float, zero_reward_difficulty: float) -> float:
    """1 / mean, capped at `zero_reward_difficulty` (which mean <= 0 gets)."""
    if mean_reward <= 0:
        return zero_reward_difficulty
    return min(1.0 / mean_reward, zero_reward_difficulty)


class DifficultyLedger:
    def __init__(self) -> None:
        self.entries: dict[str, LedgerEntry] = {}

    def observe(self, item_id: str, rewards: Iterable[float], *, step: int, stage: str) -> None:
        entry = self.entries.setdefault(item_id, LedgerEntry())
        values = [float(r) for r in rewards]
        entry.count += len(values)
        entry.total += sum(values)
        entry.last_step, entry.stage = step, stage

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, item_id: str) -> bool:
        return item_id in self.entries

    def mean(self, item_id: str) -> float:
        return self.entries[item_id].mean

    def state_dict(self) -> dict[str, list]:
        return {k: [e.count, e.total, e.last_step, e.stage] for k, e in self.entries.items()}

    def load_state_dict(self, state: dict[str, list]) -> None:
        self.entries = {k: LedgerEntry(int(c), float(t), int(s), str(g)) for k, (c, t, s, g) in state.items()}

    def rows(self, zero_reward_difficulty: float = 100.0) -> list[dict]:
        return [{"item_id": k, **asdict(e), "mean": e.mean, "difficulty": difficulty(e.mean, zero_reward_difficulty)}
                for k, e in sorted(self.entries.items())]

    def to_csv(self, path: str | Path, zero_reward_difficulty: float = 100.0) -> Path:
        rows = self.rows(zero_reward_difficulty)
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=["item_id", "count", "total", "mean", "difficulty", "last_step", "stage"])
        writer.writeheader()
        writer.writerows(rows)
        return atomic_write_text(path, buf.getvalue())

    def to_parquet(self, path: str | Path, zero_reward_difficulty: float = 100.0) -> Path:
        return atomic_write_parquet(self.rows(zero_reward_difficulty), path)
