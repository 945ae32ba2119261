"""`checkpoint.dir`: each stage's checkpoints/ lives under <checkpoint.dir>/<run dir name>/<stage folder>/, a
resume finds them there, and a new run refuses to start over another run's (a real run that saves, resumes and
is refused there: test_run.py::test_validation_before_training_and_step_metrics)."""

from __future__ import annotations

from pathlib import Path

from nemo_qwenlong.config import load_config
from nemo_qwenlong.loops.run_dir import checkpoint_dirs, stage_dirs
from tests.loops.test_run import RECIPE


def test_checkpoint_dirs_follow_the_stage_folders(tmp_path: Path) -> None:
    run_dir = tmp_path / "runs" / "r1"
    plain = load_config(RECIPE, ["pipeline=[data,sft,rl]"])
    dirs = stage_dirs(plain, run_dir)
    assert checkpoint_dirs(plain, run_dir, dirs)["sft"] == run_dir / "01-sft" / "checkpoints"
    elsewhere = load_config(RECIPE, ["pipeline=[data,sft,rl]", f"checkpoint.dir={tmp_path / 'big'}"])
    found = checkpoint_dirs(elsewhere, run_dir, dirs)
    assert found["sft"] == tmp_path / "big" / "r1" / "01-sft" / "checkpoints"
    assert found["rl-stage2-long"] == tmp_path / "big" / "r1" / "03-rl-stage2-long" / "checkpoints"
