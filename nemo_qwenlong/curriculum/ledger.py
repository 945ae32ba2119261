"""Difficulty ledger: the rollout rewards seen per item, and the difficulty rule over them.

Per item the ledger keeps lifetime totals (count, total, last step, stage) and the most recent
rewards (at most `keep`, oldest first). Difficulty (spec §5, Eq. 10 as reported) is 1 / mean
reward, taken over the last `RetrospectiveConfig.recent_window` rewards (choice: the policy's
current skill; null: the lifetime mean), capped at `max_difficulty`. An item whose recent rewards
hold no correct answer ("never solved"; 1/0 is undefined) follows `never_solved` (choice):
`skip` (not eligible), `low` (difficulty `never_solved_difficulty` < 1: all-wrong groups carry no
gradient after dynamic sampling, spec §4.4, so they are carried rarely yet still re-measured) or
`cap` (max_difficulty, the hardest). With `drop_solved`, items whose recent mean is 1 are not
eligible. Persisted with the checkpoint (`state_dict`) and exportable as CSV or Parquet.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from nemo_qwenlong.config.pipeline import RetrospectiveConfig
from nemo_qwenlong.fsio import atomic_write_parquet, atomic_write_text

COLUMNS = ["item_id", "count", "total", "mean", "difficulty", "last_step", "stage",
           "recent_count", "recent_mean", "eligible"]


@dataclass
class LedgerEntry:
    count: int = 0
    total: float = 0.0
    last_step: int = -1
    stage: str = ""
    recent: list[float] = field(default_factory=list)  # the latest rewards, oldest first

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0

    def recent_mean(self, window: int | None) -> float:
        """Mean of the last `window` rewards; None, or no recent rewards held (state written before
        they were kept), gives the lifetime mean."""
        values = self.recent[-window:] if window is not None else []
        return sum(values) / len(values) if values else self.mean


def difficulty(mean_reward: float, zero_reward_difficulty: float) -> float:
    """1 / mean, capped at `zero_reward_difficulty` (which mean <= 0 gets): the `cap` rule."""
    if mean_reward <= 0:
        return zero_reward_difficulty
    return min(1.0 / mean_reward, zero_reward_difficulty)


def rule_difficulty(mean_reward: float, cfg: RetrospectiveConfig) -> float:
    """Difficulty of an item with this (recent) mean reward: 1/mean capped at max_difficulty; a
    never-solved item (mean <= 0) gets never_solved_difficulty under `low`, else max_difficulty
    (under `skip` that is only reported: the item is not eligible)."""
    if mean_reward <= 0 and cfg.never_solved == "low":
        return cfg.never_solved_difficulty
    return difficulty(mean_reward, cfg.max_difficulty)


def eligible(mean_reward: float, cfg: RetrospectiveConfig) -> bool:
    """Whether an item with this (recent) mean reward may be carried: not solved (with drop_solved)
    and not never-solved (with never_solved=skip)."""
    if cfg.drop_solved and mean_reward >= 1.0:
        return False
    return not (cfg.never_solved == "skip" and mean_reward <= 0)


class DifficultyLedger:
    def __init__(self, *, keep: int | None = None) -> None:
        """`keep`: recent rewards held per item (None: all, exact for any window; the sampler bounds it
        by its stages' largest recent_window)."""
        self.entries: dict[str, LedgerEntry] = {}
        self.keep = keep

    def retain(self, n: int) -> None:
        """Hold at least the last `n` rewards per item from now on (a bounded `keep` only grows)."""
        if self.keep is not None:
            self.keep = max(self.keep, n)

    def observe(self, item_id: str, rewards: Iterable[float], *, step: int, stage: str) -> None:
        entry = self.entries.setdefault(item_id, LedgerEntry())
        values = [float(r) for r in rewards]
        entry.count += len(values)
        entry.total += sum(values)
        entry.last_step, entry.stage = step, stage
        entry.recent.extend(values)
        if self.keep is not None:
            del entry.recent[: max(len(entry.recent) - self.keep, 0)]

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, item_id: str) -> bool:
        return item_id in self.entries

    def mean(self, item_id: str) -> float:
        """Lifetime mean reward."""
        return self.entries[item_id].mean

    def recent_mean(self, item_id: str, window: int | None) -> float:
        """Mean of the item's last `window` rewards (None: lifetime); see `LedgerEntry.recent_mean`."""
        return self.entries[item_id].recent_mean(window)

    def state_dict(self) -> dict[str, list]:
        return {k: [e.count, e.total, e.last_step, e.stage, list(e.recent)] for k, e in self.entries.items()}

    def load_state_dict(self, state: dict[str, list]) -> None:
        """Entries [count, total, last_step, stage, recent]; the older 4-field form (no recent rewards)
        loads with an empty window, so the lifetime mean stands in until new rewards arrive."""
        self.entries = {k: _entry(v) for k, v in state.items()}

    def rows(self, zero_reward_difficulty: float | None = None, *,
             retrospective: RetrospectiveConfig | None = None) -> list[dict]:
        """One row per item; difficulty and eligibility by `retrospective` (default: the schema's
        defaults). A legacy `zero_reward_difficulty` means never_solved=cap with that cap."""
        cfg = _export_config(zero_reward_difficulty, retrospective)
        return [_row(k, e, cfg) for k, e in sorted(self.entries.items())]

    def to_csv(self, path: str | Path, zero_reward_difficulty: float | None = None, *,
               retrospective: RetrospectiveConfig | None = None) -> Path:
        rows = self.rows(zero_reward_difficulty, retrospective=retrospective)
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
        return atomic_write_text(path, buf.getvalue())

    def to_parquet(self, path: str | Path, zero_reward_difficulty: float | None = None, *,
                   retrospective: RetrospectiveConfig | None = None) -> Path:
        return atomic_write_parquet(self.rows(zero_reward_difficulty, retrospective=retrospective), path)


def _entry(fields: list) -> LedgerEntry:
    count, total, step, stage, *rest = fields
    recent = [float(r) for r in rest[0]] if rest else []
    return LedgerEntry(int(count), float(total), int(step), str(stage), recent)


def _export_config(zero_reward_difficulty: float | None,
                   cfg: RetrospectiveConfig | None) -> RetrospectiveConfig:
    cfg = cfg or RetrospectiveConfig()
    if zero_reward_difficulty is None:
        return cfg
    return RetrospectiveConfig.model_validate(
        cfg.model_dump() | {"never_solved": "cap", "max_difficulty": zero_reward_difficulty}
    )


def _row(item_id: str, e: LedgerEntry, cfg: RetrospectiveConfig) -> dict:
    recent = e.recent_mean(cfg.recent_window)
    held = min(len(e.recent), cfg.recent_window) if cfg.recent_window is not None else e.count
    return {"item_id": item_id, "count": e.count, "total": e.total, "mean": e.mean,
            "difficulty": rule_difficulty(recent, cfg), "last_step": e.last_step, "stage": e.stage,
            "recent_count": held, "recent_mean": recent, "eligible": eligible(recent, cfg)}
