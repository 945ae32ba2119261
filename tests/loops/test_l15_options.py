"""QwenLong-L1.5's options (issue 26) on a short tiny run: off (the default) reproduces the run recorded
before the options existed bit for bit; all on, the run completes and logs what each option did."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.loops.test_run import rows, run_cli

REFERENCE = Path(__file__).resolve().parents[1] / "fixtures" / "l1_reference_run.json"
# 60 SFT steps, so some RL samples are right (mixed rewards: the advantages are not all zero), then
# 2+2 RL steps over both stages, every step updating (dynamic sampling off).
SHORT = ["pipeline=[data,sft,rl]", "sft.max_steps=60", "curriculum.stages.0.steps=2", "curriculum.stages.1.steps=2",
         "checkpoint.save_every_steps=2", "data.synthetic.train_per_stage=64", "data.synthetic.heldout_per_stage=8",
         "data.synthetic.sft_items=64", "logging.val_every_steps=2", "rl.dynamic_sampling.enable=false",
         "rl.dynamic_sampling.max_rounds=2", "rl.optim.lr=0.003"]
KEYS = ("step", "stage", "item_ids_sha1", "reward_mean", "accuracy", "loss", "grad_norm")


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
    assert got == want  # exact floats: the same items, rewards, losses and gradient norms
