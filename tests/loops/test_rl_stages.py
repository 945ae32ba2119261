"""`loops.rl_stages.stage_lengths`: the stage pools and step counts, refused before any step runs."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from nemo_qwenlong.config import load_config
from nemo_qwenlong.loops.rl_stages import stage_lengths
from nemo_qwenlong.loops.run_dir import RunError

REPO = Path(__file__).resolve().parents[2]


def _run(short: int, long: int, *overrides: str) -> SimpleNamespace:
    """A run whose stage 1 (≤128 prompt tokens) has `short` items and stage 2 (128–320) `long`."""
    cfg = load_config(REPO / "conf" / "tiny-cpu.yaml", list(overrides))
    ids = [f"s{i}" for i in range(short)] + [f"l{i}" for i in range(long)]
    prompts = {x: [0] * (100 if x.startswith("s") else 200) for x in ids}
    return SimpleNamespace(cfg=cfg, prompts=prompts, data=SimpleNamespace(train=[SimpleNamespace(item_id=x) for x in ids]))


def test_a_band_smaller_than_a_generation_batch_is_refused_before_any_step() -> None:
    # rl.gen_batch_size is 16 in the tiny recipe; the sampler would raise ValueError at stage 2's first
    # step (a steps stage) or run 0 of its planned steps (an epochs stage)
    with pytest.raises(RunError, match=r"stage2-long' has 14 training items, fewer than rl.gen_batch_size=16"):
        stage_lengths(_run(40, 14))
    with pytest.raises(RunError, match="stage2-long' has 14"):
        stage_lengths(_run(40, 14, "curriculum.stages.1.steps=null", "curriculum.stages.1.epochs=2"))
    pools, steps = stage_lengths(_run(40, 14, "curriculum.drop_last=false"))  # short batches are allowed
    assert [len(p) for p in pools] == [40, 14] and steps == [60, 60]
    pools, steps = stage_lengths(_run(40, 16))
    assert [len(p) for p in pools] == [40, 16]


def test_task_balance_names_a_too_small_task_before_any_step() -> None:
    # 40 + 20 items, every 4th one multiple choice: stage 2 has 5 choice items, a batch of 16 asks 8 of each
    # of the two tasks (choice, qa)
    run = _run(40, 20, "curriculum.task_balance.enabled=true")
    run.data.train = [SimpleNamespace(item_id=it.item_id, data_source="long_toc_choices_0_20000" if i % 4 == 0
                                      else "musique_0_20000") for i, it in enumerate(run.data.train)]
    with pytest.raises(RunError, match=r"stage 'stage2-long': task 'choice' has 5 items, fewer than the 8"):
        stage_lengths(run)
    run.cfg.curriculum.task_balance.enabled = False
    assert [len(p) for p in stage_lengths(run)[0]] == [40, 20]
