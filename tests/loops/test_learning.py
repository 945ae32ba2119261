"""The embedded default (`make run`, conf/tiny-cpu.yaml, seed 1) learns: held-out accuracy after RL
at least 5 points above the SFT checkpoint's, the RL rollout accuracy rises, and each curriculum stage
teaches: a median kept-group fraction (groups with mixed correctness, the only ones with a gradient) of
at least 0.2 in each RL stage, and held-out accuracy reported by band after each stage. ~3 min on 2
cores. (The 3-seed average and the stage-1 vs stage-1+2 comparison are in docs/benchmarks.md.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.loops.test_run import rows, run_cli


@pytest.mark.slow
def test_tiny_default_learns(tmp_path: Path) -> None:
    out = tmp_path / "run"
    res = run_cli(out, timeout=1500)
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    acc = summary["heldout_accuracy"]
    print(f"held-out accuracy: SFT {acc['sft']:.3f} -> RL {acc['rl']:.3f} in {summary['wall_seconds']:.0f} s; "
          f"after each stage {summary['heldout_after_stage']}; kept medians {summary['kept_fraction_median']}")
    assert acc["rl"] >= acc["sft"] + 0.05
    assert summary["steps"] == {"sft": 200, "rl": 120}
    rl = [r["accuracy"] for r in rows(out, "rl")]
    assert sum(rl[-20:]) / 20 > sum(rl[:20]) / 20  # the rollout accuracy curve rises
    assert min(summary["kept_fraction_median"].values()) >= 0.2 and len(summary["kept_fraction_median"]) == 2
    after = summary["heldout_after_stage"]
    bands = {"heldout-stage1-short", "heldout-stage2-long", "all"}
    assert list(after) == ["sft", "stage1-short", "stage2-long"] and all(set(v) == bands for v in after.values())
    assert after["stage2-long"]["all"] == acc["rl"]  # the last probe and the eval stage agree
    assert not [line for line in res.stdout.splitlines() if line.startswith("rl step") and "nan" in line]
