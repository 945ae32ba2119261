"""The embedded default (`make run`, conf/tiny-cpu.yaml, seed 1) learns: held-out accuracy after RL
at least 5 points above the SFT checkpoint's, and the RL rollout accuracy rises. ~4 min on 2 cores.
(The 3-seed average and spread are in docs/benchmarks.md.)"""

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
    print(f"held-out accuracy: SFT {acc['sft']:.3f} -> RL {acc['rl']:.3f} in {summary['wall_seconds']:.0f} s")
    assert acc["rl"] >= acc["sft"] + 0.05
    assert summary["steps"] == {"sft": 200, "rl": 120}
    rl = [r["accuracy"] for r in rows(out, "rl")]
    assert sum(rl[-20:]) / 20 > sum(rl[:20]) / 20  # the rollout accuracy curve rises
