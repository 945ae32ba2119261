"""Retrospective sampler: determinism, state round trip, resume equivalence, hard items from earlier stages."""

from __future__ import annotations

import copy

import pytest

from nemo_qwenlong.config.pipeline import RetrospectiveConfig, StageConfig
from nemo_qwenlong.curriculum.sampler import RetrospectiveSampler

SHORT = [f"s{i:02d}" for i in range(40)]
LONG = [f"l{i:02d}" for i in range(30)]


def _stages(selection: str = "proportional", share: float = 0.25, **retro) -> list[StageConfig]:
    return [
        StageConfig(name="stage1", max_input_tokens=100, steps=10),
        StageConfig(name="stage2", min_input_tokens=100, max_input_tokens=400, steps=10,
                    retrospective=RetrospectiveConfig(share=share, selection=selection, **retro)),
    ]


def _sampler(seed: int = 3, **kw) -> RetrospectiveSampler:
    return RetrospectiveSampler([SHORT, LONG], _stages(**kw), batch_size=8, seed=seed, drop_last=True)


def _observe_stage1(s: RetrospectiveSampler) -> None:
    # item sNN has mean reward (NN mod 5) / 4: s00, s05, ... never solved (hardest), s04, s09 ... always
    s.set_stage(0)
    for _ in range(5):
        batch = s.next_batch()
        s.observe({i: [1.0] * (int(i[1:]) % 5) + [0.0] * (4 - int(i[1:]) % 5) for i in batch.item_ids}, step=batch.index)


def _run(s: RetrospectiveSampler, n: int) -> list[list[str]]:
    out = []
    for _ in range(n):
        b = s.next_batch()
        s.observe({i: [0.0, 1.0] for i in b.item_ids}, step=b.index)
        out.append(b.item_ids)
    return out


def test_deterministic_for_a_seed_and_epochs_cover_the_pool() -> None:
    a, b = _sampler(), _sampler()
    assert _run(a, 10) == _run(b, 10)
    assert _run(_sampler(seed=4), 10) != _run(_sampler(seed=3), 10)
    first_epoch = [i for batch in _run(_sampler(), 5) for i in batch]
    assert sorted(first_epoch) == SHORT  # 5 batches of 8 = one pass over 40 items, each once


def test_retrospective_items_come_from_earlier_stages_and_favour_the_hardest() -> None:
    s = _sampler(selection="proportional")
    _observe_stage1(s)
    s.set_stage(1)
    picks = []
    for _ in range(40):
        b = s.next_batch()
        assert len(b.retro) == 2 and len(b.own) == 6  # share 0.25 of 8
        assert all(i in SHORT for i in b.retro) and all(i in LONG for i in b.own)
        picks += b.retro
    assert not any(int(i[1:]) % 5 == 4 for i in picks)  # solved items (mean 1) are never carried
    never = sum(int(i[1:]) % 5 == 0 for i in picks)  # mean 0 → never_solved="low": difficulty 0.1
    hardest = sum(int(i[1:]) % 5 == 1 for i in picks)  # mean 0.25 → difficulty 4, the hardest solvable
    easiest = sum(int(i[1:]) % 5 == 3 for i in picks)  # mean 0.75 → difficulty 1.33
    assert hardest > 2 * max(easiest, 1) and never <= 0.1 * len(picks)
    assert s.metrics()["sampler/retro_items"] == 2 and s.metrics()["sampler/retro_mean_difficulty"] > 1


@pytest.mark.parametrize("selection, extra, means", [
    ("threshold", {"threshold": 3.0}, {1}),  # difficulty >= 3: mean 0.25 (4); never solved is 0.1
    ("threshold", {"threshold": 3.0, "never_solved": "cap"}, {0, 1}),  # ... or 100 under "cap"
    ("top_k", {"top_k": 4}, {1}),  # 4 of the 8 tied hardest solvable (mean 0.25), drawn per batch
    ("top_k", {"top_k": 4, "never_solved": "skip"}, {1}),
])
def test_threshold_and_top_k(selection: str, extra: dict, means: set[int]) -> None:
    s = _sampler(selection=selection, **extra)
    _observe_stage1(s)
    s.set_stage(1)
    picks = {i for _ in range(20) for i in s.next_batch().retro}
    assert {int(i[1:]) % 5 for i in picks} == means


def test_no_candidates_means_own_band_fills_the_batch() -> None:
    s = _sampler()
    s.set_stage(1)  # nothing observed in stage 1 yet
    b = s.next_batch()
    assert b.retro == [] and len(b.own) == 8


def _checkpoint_mid_stage_2(batches_after: int) -> tuple[dict, list]:
    """A sampler 3 batches into stage 2: its state, and the next `batches_after` batches uninterrupted."""
    full = _sampler()
    _observe_stage1(full)
    full.set_stage(1)
    _run(full, 3)
    checkpoint = copy.deepcopy(full.state_dict())
    return checkpoint, _run(full, batches_after)


def test_state_round_trip_and_resume_mid_stage_matches_uninterrupted() -> None:
    checkpoint, expected = _checkpoint_mid_stage_2(6)

    resumed = _sampler()  # a fresh process: same config and seed, then the checkpoint
    resumed.load_state_dict(checkpoint)
    assert resumed.state_dict() == checkpoint
    assert _run(resumed, 6) == expected


def test_resume_with_other_seed_or_batch_is_refused() -> None:
    state = _sampler().state_dict()
    with pytest.raises(ValueError, match="seed=3, this run has 4"):
        _sampler(seed=4).load_state_dict(state)
    with pytest.raises(ValueError, match="batch_size"):
        RetrospectiveSampler([SHORT, LONG], _stages(), batch_size=4, seed=3, drop_last=True).load_state_dict(state)


def test_empty_stage_pool_is_a_clear_error() -> None:
    s = RetrospectiveSampler([SHORT, []], _stages(), batch_size=8, seed=1, drop_last=True)
    s.set_stage(1)
    with pytest.raises(ValueError, match="stage 'stage2' has no items with 100 < prompt tokens <= 400"):
        s.next_batch()


# --- difficulty favours hard but solvable items, from recent rewards, ties broken by seeded chance ----------
EARLY = [f"e{i:02d}" for i in range(40)]  # 36 never solved (0/8), e36..e39 solved 1 of 8
LATE = [f"m{i:02d}" for i in range(16)]


def _two_stage(seed: int = 3, **retro) -> RetrospectiveSampler:
    stages = [
        StageConfig(name="early", max_input_tokens=100, steps=5),
        StageConfig(name="late", min_input_tokens=100, max_input_tokens=400, steps=50,
                    retrospective=RetrospectiveConfig(share=0.25, **retro)),
    ]
    return RetrospectiveSampler([EARLY, LATE], stages, batch_size=8, seed=seed, drop_last=True)


def _picks(s: RetrospectiveSampler, batches: int) -> list[str]:
    s.set_stage(1)
    return [i for _ in range(batches) for i in s.next_batch().retro]


def test_solvable_hard_items_are_preferred_to_never_solved_ones() -> None:
    def mostly_unsolved(**retro) -> RetrospectiveSampler:
        s = _two_stage(**retro)
        s.observe({i: [1.0] + [0.0] * 7 if i >= "e36" else [0.0] * 8 for i in EARLY}, step=1)
        return s

    picks = _picks(mostly_unsolved(), 50)  # default never_solved="low"
    solvable = sum(i >= "e36" for i in picks)
    print(f"default: {solvable}/{len(picks)} retrospective picks are the 4 solvable-hard items (36 never solved)")
    assert len(picks) == 100 and solvable >= 0.75 * len(picks)
    skipped = _picks(mostly_unsolved(never_solved="skip"), 50)
    assert skipped and all(i >= "e36" for i in skipped)  # never-solved items are not carried at all
    capped = _picks(mostly_unsolved(never_solved="cap"), 50)  # the old rule: never solved = the hardest
    assert sum(i >= "e36" for i in capped) < 0.25 * len(capped)


def test_equal_difficulty_ties_are_broken_by_seeded_chance() -> None:
    def first_picks(seed: int) -> list[str]:
        s = _two_stage(seed=seed, selection="top_k", top_k=2)
        s.observe({i: [1.0] + [0.0] * 7 for i in EARLY[:6]}, step=1)  # six items, all difficulty 8
        return _picks(s, 1)

    chosen = [sorted(first_picks(seed)) for seed in range(10)]
    print("top_k=2 among 6 tied items, per seed:", chosen)
    assert chosen[0] == sorted(first_picks(0))  # deterministic for a seed
    assert any(c != ["e00", "e01"] for c in chosen) and len({tuple(c) for c in chosen}) > 2


def test_difficulty_comes_from_recent_rewards_not_the_lifetime_mean() -> None:
    s = _two_stage(selection="threshold", threshold=2.0)
    s.observe({"e00": [0.0] * 8, "e01": [1.0] + [0.0] * 7}, step=1)  # e00 failed long ago ...
    s.observe({"e00": [1.0] * 7 + [0.0]}, step=40)  # ... and is solved 7 of 8 now: easy
    picks = _picks(s, 20)
    assert picks and set(picks) == {"e01"}  # lifetime mean 7/16 would make e00 hard (16/7 >= 2)
    lifetime = _two_stage(selection="threshold", threshold=2.0, recent_window=None)
    lifetime.load_state_dict(s.state_dict() | {"stage_index": 0, "batch_in_stage": 0, "own_cursor": 0})
    assert set(_picks(lifetime, 20)) == {"e00", "e01"}  # recent_window=None: the lifetime mean


# --- set_stage on the current stage keeps the cursors; checkpoints carry pool/stage fingerprints ---------
def test_set_stage_after_resume_continues_mid_stage() -> None:
    checkpoint, expected = _checkpoint_mid_stage_2(4)

    resumed = _sampler()
    resumed.load_state_dict(checkpoint)
    resumed.set_stage(1)  # what a loop does at the top of each stage: must not restart the stage
    assert resumed.batch_in_stage == 3
    assert _run(resumed, 4) == expected
    resumed.set_stage(0)  # moving to another stage starts it from its beginning
    assert (resumed.stage_index, resumed.batch_in_stage, resumed.own_cursor) == (0, 0, 0)


def test_resume_with_other_pools_or_stages_is_refused() -> None:
    state = _sampler().state_dict()
    assert len(state["pools"]) == 2 and state["stages"][1]["name"] == "stage2"
    other_pool = RetrospectiveSampler([SHORT, LONG + ["l99"]], _stages(), batch_size=8, seed=3, drop_last=True)
    with pytest.raises(ValueError, match="item pool of stage 1 'stage2'.*30 items.*31 items"):
        other_pool.load_state_dict(state)
    reordered = RetrospectiveSampler([SHORT, LONG[::-1]], _stages(), batch_size=8, seed=3, drop_last=True)
    with pytest.raises(ValueError, match="item pool of stage 1 'stage2'"):
        reordered.load_state_dict(state)
    stages = _stages()
    stages[1] = stages[1].model_copy(update={"max_input_tokens": 500})
    with pytest.raises(ValueError, match=r"stage 1: checkpoint has 'stage2' \(100, 400\], this run has 'stage2' \(100, 500\]"):
        RetrospectiveSampler([SHORT, LONG], stages, batch_size=8, seed=3, drop_last=True).load_state_dict(state)
    renamed = _stages()
    renamed[0] = renamed[0].model_copy(update={"name": "warmup"})
    with pytest.raises(ValueError, match="stage 0: checkpoint has 'stage1'"):
        RetrospectiveSampler([SHORT, LONG], renamed, batch_size=8, seed=3, drop_last=True).load_state_dict(state)
    with pytest.raises(ValueError, match="checkpoint has 2 curriculum stages .*this run has 3"):
        RetrospectiveSampler([SHORT, LONG, ["x"]], _stages() + [StageConfig(name="stage3", min_input_tokens=400,
                             max_input_tokens=800, steps=1)], batch_size=8, seed=3, drop_last=True).load_state_dict(state)


def test_version1_checkpoint_still_loads() -> None:
    s = _sampler()
    _observe_stage1(s)
    s.set_stage(1)
    _run(s, 2)
    state = s.state_dict()
    old = {"version": 1, "seed": 3, "batch_size": 8, "stage_index": 1, "batch_in_stage": 2,
           "own_cursor": state["own_cursor"], "ledger": {k: v[:4] for k, v in state["ledger"].items()}}
    resumed = _sampler()
    resumed.load_state_dict(old)
    assert (resumed.stage_index, resumed.batch_in_stage) == (1, 2)
    assert resumed.ledger.recent_mean("s01", 8) == pytest.approx(s.ledger.mean("s01"))  # lifetime stands in
