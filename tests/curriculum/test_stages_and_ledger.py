"""Stage filtering by token length, stage lengths, and the difficulty ledger."""

from __future__ import annotations

import csv
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from nemo_qwenlong.config import load_config
from nemo_qwenlong.config.pipeline import StageConfig
from nemo_qwenlong.curriculum.ledger import DifficultyLedger, difficulty
from nemo_qwenlong.curriculum.stages import split_by_stage, stage_steps, unplaced

STAGES = load_config(None).curriculum.stages  # the paper's: (0, 20000], (20000, 60000]


def test_items_go_to_the_band_they_fit_never_truncated() -> None:
    lengths = {"a": 100, "b": 20000, "c": 20001, "d": 60000, "e": 60001, "f": 70000}
    s1, s2 = split_by_stage(list(lengths), lengths, STAGES)
    assert s1.item_ids == ["a", "b"] and s2.item_ids == ["c", "d"]  # boundaries: (min, max]
    assert (s1.too_long, s2.too_long, s2.too_short) == (4, 2, 2)
    assert unplaced(list(lengths), lengths, STAGES) == ["e", "f"]  # filtered and reported, never cut


def test_stage_steps_from_steps_or_epochs() -> None:
    assert stage_steps(StageConfig(name="s", steps=7), 100, 8) == 7
    assert stage_steps(StageConfig(name="s", epochs=1.5), 100, 8) == 19  # ceil(1.5 · 100 / 8)
    assert stage_steps(StageConfig(name="s", epochs=2), 0, 8) == 0


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
    assert [r["item_id"] for r in rows] == ["x", "y"] and float(rows[1]["difficulty"]) == 100.0
    table = pq.read_table(ledger.to_parquet(tmp_path / "ledger.parquet")).to_pylist()
    assert table[0]["mean"] == pytest.approx(0.375) and table[0]["difficulty"] == pytest.approx(8 / 3)
