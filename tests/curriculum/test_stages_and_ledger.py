"""Stage filtering by token length, stage lengths, and the difficulty ledger."""

from __future__ import annotations

import csv
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from nemo_qwenlong.config import load_config
from nemo_qwenlong.config.pipeline import RetrospectiveConfig, StageConfig
from nemo_qwenlong.curriculum.ledger import DifficultyLedger, difficulty, eligible, rule_difficulty
from nemo_qwenlong.curriculum.stages import split_by_stage, stage_steps, unplaced

STAGES = load_config(None).curriculum.stages  # the paper's: (0, 20000], (20000, 60000]


def test_items_go_to_the_band_they_fit_never_truncated() -> None:
    lengths = {"a": 100, "b": 20000, "c": 20001, "d": 60000, "e": 60001, "f": 70000}
    s1, s2 = split_by_stage(list(lengths), lengths, STAGES)
    assert s1.item_ids == ["a", "b"] and s2.item_ids == ["c", "d"]  # boundaries: (min, max]
    assert (s1.too_long, s2.too_long, s2.too_short) == (4, 2, 2)
    assert unplaced(list(lengths), lengths, STAGES) == ["e", "f"]  # filtered and reported, never cut


def test_stage_steps_from_steps_or_epochs() -> None:
    assert stage_steps(StageConfig(name="s", steps=7), 100, 8, drop_last=True) == 7
    # 1.5 epochs of 100 items in batches of 8: a pass of 100 (12 batches, 4 left over), then 50 (6, 2 left)
    assert stage_steps(StageConfig(name="s", epochs=1.5), 100, 8, drop_last=True) == 12 + 6
    assert stage_steps(StageConfig(name="s", epochs=1.5), 100, 8, drop_last=False) == 13 + 7  # short batches
    assert stage_steps(StageConfig(name="s", epochs=2), 0, 8, drop_last=True) == 0


def test_difficulty_rule() -> None:
    assert difficulty(0.5, 100) == 2.0 and difficulty(1.0, 100) == 1.0
    assert difficulty(0.0, 100) == 100 and difficulty(0.001, 100) == 100  # capped, defined for mean 0


def test_ledger_counts_persists_and_exports(tmp_path: Path) -> None:
    ledger = DifficultyLedger()
    ledger.observe("x", [1, 0, 0, 0], step=3, stage="stage1")
    ledger.observe("x", [1, 1, 0, 0], step=5, stage="stage2")
    ledger.observe("y", [0, 0], step=5, stage="stage2")
    entry = ledger.entries["x"]
    assert (entry.count, entry.total, entry.last_step, entry.stage) == (8, 3.0, 5, "stage2")
    assert ledger.mean("x") == pytest.approx(3 / 8)
    restored = DifficultyLedger()
    restored.load_state_dict(ledger.state_dict())
    assert restored.state_dict() == ledger.state_dict()
    rows = list(csv.DictReader(open(ledger.to_csv(tmp_path / "ledger.csv"))))
    assert [r["item_id"] for r in rows] == ["x", "y"]
    low = RetrospectiveConfig().never_solved_difficulty  # y never solved: the default "low" weight
    assert float(rows[1]["difficulty"]) == low and rows[1]["eligible"] == "True"
    legacy = list(csv.DictReader(open(ledger.to_csv(tmp_path / "legacy.csv", 100.0))))  # the old argument: cap
    assert float(legacy[1]["difficulty"]) == 100.0
    table = pq.read_table(ledger.to_parquet(tmp_path / "ledger.parquet")).to_pylist()
    assert table[0]["mean"] == pytest.approx(0.375) and table[0]["difficulty"] == pytest.approx(8 / 3)


def test_ledger_keeps_recent_rewards_and_round_trips_them() -> None:
    ledger = DifficultyLedger(keep=8)
    ledger.observe("x", [0.0] * 8, step=1, stage="stage1")  # failed long ago
    ledger.observe("x", [1.0] * 7 + [0.0], step=40, stage="stage1")  # solved 7 of 8 recently
    assert ledger.mean("x") == pytest.approx(7 / 16)  # the lifetime mean is unchanged
    assert ledger.recent_mean("x", 8) == pytest.approx(7 / 8) and ledger.recent_mean("x", None) == ledger.mean("x")
    assert ledger.recent_mean("x", 4) == pytest.approx(3 / 4)
    cfg = RetrospectiveConfig()
    assert rule_difficulty(ledger.recent_mean("x", cfg.recent_window), cfg) == pytest.approx(8 / 7)  # easy now
    assert len(ledger.entries["x"].recent) == 8  # bounded by keep
    restored = DifficultyLedger(keep=8)
    restored.load_state_dict(ledger.state_dict())
    assert restored.state_dict() == ledger.state_dict() and restored.recent_mean("x", 8) == pytest.approx(7 / 8)
    old_format = DifficultyLedger()
    old_format.load_state_dict({"y": [4, 1.0, 3, "stage1"]})  # before recent rewards were kept
    assert old_format.recent_mean("y", 8) == 0.25 and old_format.entries["y"].count == 4


def test_never_solved_rule() -> None:
    low, skip, cap = (RetrospectiveConfig(never_solved=n) for n in ("low", "skip", "cap"))
    assert rule_difficulty(0.0, low) == low.never_solved_difficulty < 1 <= rule_difficulty(0.875, low)
    assert rule_difficulty(0.0, cap) == cap.max_difficulty and rule_difficulty(0.125, cap) == 8.0
    assert eligible(0.0, low) and eligible(0.0, cap) and not eligible(0.0, skip)
    assert not eligible(1.0, low) and eligible(1.0, RetrospectiveConfig(drop_solved=False))
    with pytest.raises(ValueError, match="zero_reward_difficulty was replaced"):
        RetrospectiveConfig.model_validate({"zero_reward_difficulty": 100})
