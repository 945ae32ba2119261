"""`checkpoint.dir`: each stage's checkpoints/ lives under <checkpoint.dir>/<run dir name>/<stage folder>/, a
resume finds them there, and a new run refuses to start over another run's. The run is the tiny one of
test_run.py ([data, rl], 2 RL steps, then 1 more on resume; about a minute each on 2 cores)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from nemo_qwenlong.config import load_config
from nemo_qwenlong.loops.run_dir import checkpoint_dirs, stage_dirs
from tests.loops.test_run import NO_SFT, RECIPE, SMALL, rows, run_cli


def test_checkpoint_dirs_follow_the_stage_folders(tmp_path: Path) -> None:
    run_dir = tmp_path / "runs" / "r1"
    plain = load_config(RECIPE, ["pipeline=[data,sft,rl]"])
    dirs = stage_dirs(plain, run_dir)
    assert checkpoint_dirs(plain, run_dir, dirs)["sft"] == run_dir / "01-sft" / "checkpoints"
    elsewhere = load_config(RECIPE, ["pipeline=[data,sft,rl]", f"checkpoint.dir={tmp_path / 'big'}"])
    found = checkpoint_dirs(elsewhere, run_dir, dirs)
    assert found["sft"] == tmp_path / "big" / "r1" / "01-sft" / "checkpoints"
    assert found["rl-stage2-long"] == tmp_path / "big" / "r1" / "03-rl-stage2-long" / "checkpoints"


def test_a_run_saves_and_resumes_under_checkpoint_dir(tmp_path: Path) -> None:
    out, big = tmp_path / "run", tmp_path / "big"
    args = [*SMALL, *NO_SFT, "checkpoint.save_every_steps=1", f"checkpoint.dir={big}"]
    first = run_cli(out, *args, "--max-steps", "2")
    assert first.returncode == 0, first.stderr[-3000:]
    ckpts = big / "run" / "01-rl-stage1-short" / "checkpoints"
    assert (ckpts / "iter_0000002").is_dir() and (ckpts / "latest_checkpointed_iteration.txt").read_text() == "2"
    assert not list(out.rglob("checkpoints"))  # nothing of them in the run directory
    resumed = run_cli(out, *args, "--max-steps", "3")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    # stage 1 done; stage 2 goes on from the global step of checkpoint 2 (without it: steps 1-2 again)
    assert "resuming" in resumed.stdout and "rl stage stage2-long: steps 3-4" in resumed.stdout, resumed.stdout
    assert [(r["step"], r["stage"]) for r in rows(out, "rl")] == [(1, "stage1-short"), (2, "stage1-short"),
                                                                  (3, "stage2-long")]
    assert (big / "run" / "02-rl-stage2-long" / "checkpoints" / "iter_0000003").is_dir()
    assert json.loads((out / "01-rl-stage1-short" / "stage.json").read_text())["checkpoint"] == str(ckpts)

    # the run directory gone, its checkpoints left: a new run of that name refuses to start over them
    shutil.rmtree(out)
    again = run_cli(out, *args, "--max-steps", "1")
    assert again.returncode == 2 and "Traceback" not in again.stderr, again.stderr[-3000:]
    assert f"checkpoint.dir: {big / 'run'} holds checkpoints of an earlier run named 'run'" in again.stderr
    assert not (out / "config.yaml").exists()  # refused before the run directory was written
