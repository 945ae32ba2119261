"""`nemo-qwenlong run` with a curriculum stage given in epochs (issue 22.8), on the tiny recipe with real
objects: the stage ends when its data runs out (dynamic sampling draws several batches a step, the
last step is cut short by the data), the next stage starts right after it, and a run stopped inside
that next stage resumes to exactly the uninterrupted run."""

from __future__ import annotations

import csv
from pathlib import Path

from tests.loops.test_run import key_series, rows, run_cli

# Stage 1: one epoch over its 64 items = 64 // 16 = 4 generation batches (planned: 4 steps); the
# untrained policy answers nothing right, so dynamic sampling keeps no group and every step draws
# max_rounds=3 batches until the data runs out: step 1 takes 3 batches, step 2 the last one.
EPOCH_STAGE = ["pipeline=[data,rl]", "curriculum.stages.0.steps=null", "curriculum.stages.0.epochs=1",
               "curriculum.stages.1.steps=2", "checkpoint.save_every_steps=2", "data.synthetic.train_per_stage=64",
               "data.synthetic.heldout_per_stage=8", "data.synthetic.sft_items=64", "logging.val_every_steps=100",
               "rl.dynamic_sampling.max_rounds=3"]


def test_epoch_stage_ends_when_its_data_runs_out_and_resumes_exactly(tmp_path: Path) -> None:
    straight = tmp_path / "straight"
    res = run_cli(straight, *EPOCH_STAGE)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "rl stage stage1-short: steps 1-4 at most" in res.stdout and "64 items" in res.stdout
    rl = rows(straight, "rl")
    first = [r for r in rl if r["stage"] == "stage1-short"]
    assert [r["step"] for r in first] == [1, 2]  # 2 of the 4 planned steps: the data ran out
    assert [r["dynamic_sampling/rounds"] for r in first] == [3, 1]  # 4 batches = 1 epoch × 64 // 16, no more
    assert [r["dynamic_sampling/data_ran_out"] for r in first] == [0, 1]
    with open(straight / "01-rl-stage1-short" / "difficulty_ledger.csv") as f:
        ledger = [r for r in csv.DictReader(f) if r["stage"] == "stage1-short"]
    assert len(ledger) == 64 and {int(r["count"]) for r in ledger} == {8}  # every item once: one group of 8
    assert [(r["step"], r["stage"]) for r in rl[2:]] == [(3, "stage2-long"), (4, "stage2-long")]

    # stopped after step 3 (inside stage 2, which started after step 2, not after the 4 planned), resumed
    stopped = tmp_path / "stopped"
    part = run_cli(stopped, *EPOCH_STAGE, "--max-steps", "3")
    assert part.returncode == 0, part.stderr[-3000:]
    assert [r["step"] for r in rows(stopped, "rl")] == [1, 2, 3]
    resumed = run_cli(stopped, *EPOCH_STAGE)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming" in resumed.stdout
    assert key_series(stopped) == key_series(straight)
