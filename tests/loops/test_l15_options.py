"""QwenLong-L1.5's options (issue 26) on a short tiny run: off (the default) reproduces the run recorded
before the options existed bit for bit; all on, the run completes, logs what each option did and resumes exactly."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.loops.test_run import rows, run_cli

REFERENCE = Path(__file__).resolve().parents[1] / "fixtures" / "l1_reference_run.json"
# 60 SFT steps, so some RL samples are right (mixed rewards: the advantages are not all zero), then
# 2+2 RL steps over both stages, every step updating (dynamic sampling off) once, with a 4-step RL warm-up.
SHORT = ["pipeline=[data,sft,rl]", "sft.max_steps=60", "curriculum.stages.0.steps=2", "curriculum.stages.1.steps=2",
         "checkpoint.save_every_steps=2", "data.synthetic.train_per_stage=64", "data.synthetic.heldout_per_stage=8",
         "data.synthetic.sft_items=64", "logging.val_every_steps=2", "rl.dynamic_sampling.enable=false",
         "rl.dynamic_sampling.max_rounds=2", "rl.optim.lr=0.003", "rl.optim.warmup_steps=4"]
KEYS = ("step", "stage", "item_ids_sha1", "reward_mean", "accuracy", "loss", "grad_norm", "lr", "optimizer_steps")


def rl_rows(out: Path) -> list[dict]:
    return [{k: r.get(k) for k in KEYS} for r in rows(out, "rl")]


def test_options_off_reproduce_the_run_before_the_options_bit_for_bit(tmp_path: Path) -> None:
    out = tmp_path / "off"
    res = run_cli(out, *SHORT)
    assert res.returncode == 0, res.stderr[-3000:]
    got = rl_rows(out)
    if os.environ.get("NQL_UPDATE_SNAPSHOTS") == "1":
        ref = json.loads(REFERENCE.read_text())
        REFERENCE.write_text(json.dumps(ref | {"rows": got}, indent=1) + "\n")
    want = json.loads(REFERENCE.read_text())["rows"]
    assert len(want) == 4 and any(r["loss"] != 0 for r in want) and any(r["accuracy"] > 0 for r in want)
    assert got == want  # exact floats: the same items, rewards, losses, gradient norms and LRs
    # RL loads the SFT checkpoint's weights, not its optimiser: its warm-up starts at its first value, not
    # part-way (once, the SFT steps counted and RL began at 3/4 of its peak LR)
    assert [r["lr"] for r in rows(out, "sft")[:2]] == pytest.approx([0.0003, 0.0006], rel=1e-12)  # tiny-cpu's SFT
    assert [r["optimizer_steps"] for r in got] == [1, 1, 1, 1]
    assert [r["lr"] for r in got] == pytest.approx([0.00075, 0.0015, 0.00225, 0.003], rel=1e-12)


ALL_ON = ["data.synthetic.choice_every=4", "curriculum.task_balance.enabled=true", "rl.advantage_std=task",
          "rl.aepo.enable=true", "rl.aepo.mode=band", "rl.aepo.entropy_low=0.0", "rl.aepo.entropy_high=100.0",
          "data.prompt_template=qwenlong-l1.5"]


ALL_ON_REFERENCE = REFERENCE.with_name("l15_all_on_run.json")


def all_on_rows(out: Path) -> list[dict]:
    got = rows(out, "rl")
    new = sorted({k for r in got for k in r if k.startswith(("sampler/", "adv/", "aepo/"))})
    return [{k: r.get(k) for k in (*KEYS, "update_skipped", *new)} for r in got]


def test_all_options_on_complete_log_what_they_did_and_resume_exactly(tmp_path: Path) -> None:
    """Stopped after step 3 (inside stage 2) and resumed: every logged value equals the straight run's
    (recorded in tests/fixtures/l15_all_on_run.json by a straight run of this test with
    NQL_UPDATE_SNAPSHOTS=1): the task streams and the AEPO state continue exactly."""
    if os.environ.get("NQL_UPDATE_SNAPSHOTS") == "1":
        straight = tmp_path / "straight"
        assert run_cli(straight, *SHORT, *ALL_ON).returncode == 0
        ALL_ON_REFERENCE.write_text(json.dumps({"note": "a straight run of test_l15_options.ALL_ON", "rows":
                                                all_on_rows(straight)}, indent=1) + "\n")
    out = tmp_path / "on"
    res = run_cli(out, *SHORT, *ALL_ON, "--max-steps", "3")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "tasks choice" in res.stdout and "qa " in res.stdout  # the stage-start line names each task's items
    resumed = run_cli(out, *SHORT, *ALL_ON)
    assert resumed.returncode == 0 and "resuming" in resumed.stdout, resumed.stderr[-3000:]
    got = all_on_rows(out)
    assert [r["step"] for r in got] == [1, 2, 3, 4]
    for r in got:  # every step: balanced shares, a std per task, AEPO's state and kept count
        assert r["sampler/task_items/choice"] == r["sampler/task_items/qa"] > 0
        assert {"adv/task_std/choice", "adv/task_std/qa"} <= set(r)
        assert r["aepo/masking"] == 1 and r["aepo/entropy"] > 0  # the band (0, 100) always masks
        assert 0 <= r["aepo/kept"] <= 8 * 8 and r["aepo/kept_frac"] == r["aepo/kept"] / (8 * 8)  # of the training batch
        assert r["update_skipped"] == (r["aepo/kept"] == 0)
    assert any(r["update_skipped"] == 0 for r in got)  # some step trained on its kept samples
    want = json.loads(REFERENCE.read_text())["rows"]
    assert [r["loss"] for r in got] != [r["loss"] for r in want]  # the options changed the run
    assert got == json.loads(ALL_ON_REFERENCE.read_text())["rows"]
