"""The toy RL run of the algorithm core: it learns, and the CLI writes a complete run directory."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from nemo_qwenlong.config import load_config
from nemo_qwenlong.demo.loop import run_demo
from nemo_qwenlong.demo.task import EOS, ToyDocQA, is_correct

TINY = Path(__file__).resolve().parents[2] / "conf" / "toy-demo.yaml"


def test_toy_items_fit_the_stage_band() -> None:
    import random

    task, rng = ToyDocQA(), random.Random(0)
    for i in range(200):
        item = task.sample(rng, 32, 128, f"t{i}")
        assert 32 < len(item.prompt) <= 128
        assert item.answer in (item.prompt[0], item.prompt[-3])
    assert is_correct([item.answer, EOS], item.answer) and not is_correct([], item.answer)


@pytest.mark.slow
def test_policy_learns_the_toy_task(tmp_path: Path) -> None:
    cfg = load_config(TINY, ["curriculum.stages.0.steps=22", "curriculum.stages.1.steps=1"])
    result = run_demo(cfg, tmp_path, progress=False)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == result.steps == 23
    # chance is ~1/21 (first token among 21); a learning policy clearly beats it within 22 steps
    early = sum(r["accuracy"] for r in rows[:3]) / 3
    late = sum(r["accuracy"] for r in rows[19:22]) / 3
    assert early < 0.12 and late > early + 0.08, [round(r["accuracy"], 3) for r in rows]
    assert all(r["optimizer_steps"] == 2 for r in rows)  # 16 prompts / mini-batch 8
    assert all(r["num_tokens"] > 0 and abs(r["ratio_mean"] - 1) < 0.5 for r in rows)
    assert {r["stage"] for r in rows} == {"stage1-short", "stage2-long"}


def test_cli_demo_writes_run_dir(cli_exe: str, repo_root: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    out = subprocess.run(
        [cli_exe, "demo", "--no-progress", "--run-dir", str(run_dir),
         "curriculum.stages.0.steps=2", "curriculum.stages.1.steps=1"],
        capture_output=True, text=True, cwd=repo_root, timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "3 RL steps" in out.stdout
    assert (run_dir / "config.yaml").read_text().startswith("name: toy-demo")
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 3
    assert (run_dir / "demo_curve.png").stat().st_size > 1000
    assert (run_dir / "difficulty_ledger.csv").read_text().startswith("item_id,count,total,mean,difficulty")


def test_stage_two_mixes_in_hard_items_from_stage_one(tmp_path: Path) -> None:
    cfg = load_config(TINY, ["curriculum.stages.0.steps=3", "curriculum.stages.1.steps=6"])
    run_demo(cfg, tmp_path, progress=False)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    stage1, stage2 = rows[:3], rows[3:]
    assert all(r["retro_rows"] == 0 and r["sampler/retro_candidates"] == 0 for r in stage1)
    assert all(r["sampler/retro_candidates"] > 0 for r in stage2)  # stage-1 items observed in the ledger
    assert sum(r["retro_rows"] for r in stage2) > 0  # and some reached the training batches


def test_cli_demo_exhaustion_is_a_clear_error(cli_exe: str, repo_root: Path, tmp_path: Path) -> None:
    out = subprocess.run(
        [cli_exe, "demo", "--no-progress", "--run-dir", str(tmp_path / "r"), "rl.dynamic_sampling.on_exhausted=error",
         "rl.dynamic_sampling.max_rounds=1", "rl.gen_batch_size=16", "curriculum.stages.0.steps=1",
         "curriculum.stages.1.steps=1"],
        capture_output=True, text=True, cwd=repo_root, timeout=300,
    )
    assert out.returncode == 1
    assert "run stopped: dynamic sampling: 1 of 1 rounds kept" in out.stderr and "Traceback" not in out.stderr
