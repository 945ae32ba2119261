"""Passes over a stage's pool: no item twice in a batch (issue 22.5), and a stage given in `epochs`
hands out exactly the batches of its passes, then reports itself exhausted (issue 22.8)."""

from __future__ import annotations

import copy

import pytest
import torch

from nemo_qwenlong.algorithms import DynamicSamplingExhausted, collect_groups
from nemo_qwenlong.algorithms.batch import RolloutBatch
from nemo_qwenlong.config.pipeline import RetrospectiveConfig, StageConfig
from nemo_qwenlong.curriculum.sampler import RetrospectiveSampler
from nemo_qwenlong.curriculum.stages import pass_batches, pass_items, stage_steps

POOL = [f"p{i:02d}" for i in range(30)]
EARLY = [f"e{i:02d}" for i in range(40)]


def _one_stage(pool: list[str], *, drop_last: bool = True, seed: int = 3, **length) -> RetrospectiveSampler:
    stage = StageConfig(name="only", max_input_tokens=100, **(length or {"steps": 100}))
    return RetrospectiveSampler([pool], [stage], batch_size=8, seed=seed, drop_last=drop_last)


def _draw_all(s: RetrospectiveSampler, limit: int = 1000) -> list[list[str]]:
    out = []
    while not s.exhausted():
        out.append(s.next_batch().item_ids)
        assert len(out) < limit, "the stage never ran out"
    return out


# --- 22.5: no item twice in one batch, also where a batch would straddle two passes ----------------------
@pytest.mark.parametrize("seed", range(5))
def test_no_item_twice_in_a_batch_across_pass_boundaries(seed: int) -> None:
    s = _one_stage(POOL, seed=seed)  # 30 items, batches of 8: each pass leaves 6 that cannot fill one
    batches = [s.next_batch().item_ids for _ in range(40)]
    assert all(len(set(b)) == len(b) == 8 for b in batches)
    first_pass = [i for b in batches[:3] for i in b]
    assert len(set(first_pass)) == 24  # 3 full batches; the 6 left over are dropped (drop_last)
    assert s.own_cursor == 13 * 30 + 8  # 40 batches = 13 passes of 3 batches, then one into pass 14


def test_without_drop_last_the_leftover_is_a_short_batch() -> None:
    s = _one_stage(POOL, drop_last=False)
    batches = [s.next_batch().item_ids for _ in range(8)]
    assert [len(b) for b in batches] == [8, 8, 8, 6, 8, 8, 8, 6]  # ceil(30 / 8) = 4 batches a pass
    assert sorted(i for b in batches[:4] for i in b) == POOL  # the short batch is the rest of the pass
    assert sorted(i for b in batches[4:] for i in b) == POOL


def test_overlapping_bands_never_put_an_item_twice_in_a_batch() -> None:
    stages = [StageConfig(name="a", max_input_tokens=100, steps=5),
              StageConfig(name="b", min_input_tokens=0, max_input_tokens=400, steps=50,  # (0, 400] holds a's items
                          retrospective=RetrospectiveConfig(share=0.5, selection="threshold", threshold=1.0))]
    s = RetrospectiveSampler([EARLY[:10], EARLY], stages, batch_size=8, seed=1, drop_last=True)
    s.observe({i: [0.0, 1.0] for i in EARLY[:10]}, step=1)
    s.set_stage(1)
    for _ in range(20):
        b = s.next_batch()
        assert b.retro == [] and len(set(b.item_ids)) == 8  # a's items come round in b's own band anyway


# --- 22.8: a stage given in epochs ends when its passes are used up -------------------------------------
def test_pass_arithmetic() -> None:
    assert [pass_items(1.5, 30, p) for p in range(3)] == [30, 15, 0]  # a whole pass, then half of one
    assert pass_items(0.29, 100, 0) == 29  # exact decimals: 0.29 · 100 is 28.999… in floating point
    assert pass_items(None, 30, 99) == 30  # a stage in steps passes for ever
    assert pass_batches(42, 8, drop_last=True) == 5 and pass_batches(42, 8, drop_last=False) == 6


def test_stage_in_epochs_hands_out_exactly_epochs_times_pool_over_batch() -> None:
    s = _one_stage(EARLY + ["x1", "x2"], epochs=2)  # 42 items, batches of 8
    batches = _draw_all(s)
    assert len(batches) == 2 * (42 // 8) == 10 == stage_steps(s.stage, 42, 8, drop_last=True)
    for one_pass in (batches[:5], batches[5:]):  # each pass: 40 different items, 2 left over
        assert len({i for b in one_pass for i in b}) == 40
    with pytest.raises(ValueError, match="has handed out every batch of its 2.0 epoch"):
        s.next_batch()
    short = _draw_all(_one_stage(EARLY + ["x1", "x2"], epochs=2, drop_last=False))
    assert [len(b) for b in short] == [8] * 5 + [2] + [8] * 5 + [2]
    assert stage_steps(StageConfig(name="s", epochs=2), 42, 8, drop_last=False) == 12
    half = _draw_all(_one_stage(EARLY, epochs=1.5))  # 40 items: 5 batches, then 20 items = 2 batches
    assert len(half) == 7 == stage_steps(StageConfig(name="s", epochs=1.5), 40, 8, drop_last=True)


def _second_stage(epochs: float, share: float = 0.25) -> RetrospectiveSampler:
    stages = [StageConfig(name="early", max_input_tokens=100, steps=5),
              StageConfig(name="late", min_input_tokens=100, max_input_tokens=400, epochs=epochs,
                          retrospective=RetrospectiveConfig(share=share))]
    return RetrospectiveSampler([EARLY, POOL], stages, batch_size=8, seed=3, drop_last=True)


def test_retrospective_items_make_more_batches_per_pass_and_the_plan_is_their_most() -> None:
    s = _second_stage(epochs=1)
    s.observe({i: [0.0, 1.0] for i in EARLY}, step=1)  # 40 candidates: every batch gets its 2 retro items
    s.set_stage(1)
    batches = _draw_all(s)
    planned = stage_steps(s.stage, 30, 8, drop_last=True)
    assert len(batches) == planned == 30 // 6 == 5  # 6 own items a batch
    empty = _second_stage(epochs=1)  # nothing observed: no retro items, 8 own ones, fewer batches
    empty.set_stage(1)
    assert len(_draw_all(empty)) == 30 // 8 == 3 < planned
    with pytest.raises(ValueError, match="share=1.0 leaves no own-band item"):
        stage_steps(_second_stage(epochs=1, share=1.0).stages[1], 30, 8, drop_last=True)


def test_exhausted_is_a_peek_and_resume_mid_stage_ends_at_the_same_batch() -> None:
    s = _second_stage(epochs=2)
    s.observe({i: [0.0, 1.0] for i in EARLY}, step=1)
    s.set_stage(1)
    for _ in range(3):
        s.next_batch()
    before = copy.deepcopy(s.state_dict())
    assert not s.exhausted() and s.state_dict() == before  # peeking changes nothing
    rest = _draw_all(s)
    resumed = _second_stage(epochs=2)
    resumed.load_state_dict(before)
    resumed.set_stage(1)
    assert _draw_all(resumed) == rest and len(rest) == 2 * 5 - 3


def _round(ids: list[str], group_size: int = 2) -> RolloutBatch:
    """A generation round of `ids` whose groups are all wrong (dynamic sampling keeps none)."""
    n = len(ids) * group_size
    return RolloutBatch(
        group_ids=torch.arange(len(ids)).repeat_interleave(group_size), sample_ids=torch.arange(n),
        prompt_ids=torch.ones(n, 1, dtype=torch.int64), prompt_lengths=torch.ones(n, dtype=torch.int64),
        response_ids=torch.ones(n, 1, dtype=torch.int64), response_mask=torch.ones(n, 1, dtype=torch.bool),
        truncated=torch.zeros(n, dtype=torch.bool), rewards=torch.zeros(n), correct=torch.zeros(n, dtype=torch.bool),
        item_ids=tuple(i for i in ids for _ in range(group_size)))


def test_steps_with_dynamic_sampling_consume_exactly_the_stage_batches() -> None:
    """The stage loop of `run` (loops.pipeline / loops.rl): steps while the sampler has data, each step
    drawing rounds until max_rounds or the data runs out mid-step. 10 batches, 3 rounds a step:
    steps of 3, 3, 3 and 1 round(s), the last cut short by the data (planned: 10 steps)."""
    s = _one_stage(EARLY + ["x1", "x2"], epochs=2)
    rounds, drawn = [], []

    def generate_round(_: int) -> RolloutBatch:
        drawn.append(s.next_batch().item_ids)
        return _round(drawn[-1])

    while not s.exhausted():
        with pytest.raises(DynamicSamplingExhausted) as err:  # all groups wrong: none kept, the step is skipped
            collect_groups(generate_round, target_groups=4, group_size=2, max_rounds=3, on_exhausted="partial",
                           more_data=lambda: not s.exhausted())
        rounds.append((err.value.stats.rounds, err.value.stats.data_ran_out))
    assert rounds == [(3, False), (3, False), (3, False), (1, True)]
    assert len(drawn) == 10 == stage_steps(s.stage, 42, 8, drop_last=True)
