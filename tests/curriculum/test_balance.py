"""Task-balanced sampling (curriculum.task_balance): exact shares, resume, too-small tasks named, and the
option off leaves the QwenLong-L1 sampler's item sequence unchanged."""

from __future__ import annotations

import json
from collections import Counter
from types import SimpleNamespace

import pytest

from nemo_qwenlong.config.pipeline import RetrospectiveConfig, StageConfig
from nemo_qwenlong.config.schema import RunConfig
from nemo_qwenlong.curriculum.balance import apportion, task_needs
from nemo_qwenlong.data.task import task_of
from nemo_qwenlong.curriculum.sampler import RetrospectiveSampler
from nemo_qwenlong.loops.rl_stages import item_tasks

# stage 1: 30 qa, 12 math, 6 choice items; stage 2: 9 qa, 8 math, 7 choice items
SHORT = [f"q{i:02d}" for i in range(30)] + [f"m{i:02d}" for i in range(12)] + [f"c{i:02d}" for i in range(6)]
LONG = [f"Q{i:02d}" for i in range(9)] + [f"M{i:02d}" for i in range(8)] + [f"C{i:02d}" for i in range(7)]
TASK = {"q": "qa", "m": "math", "c": "choice"}
TASKS = {i: TASK[i[0].lower()] for i in SHORT + LONG}


def _stages(share: float = 1 / 3, **stage2) -> list[StageConfig]:
    return [StageConfig(name="a", max_input_tokens=100, steps=5),
            StageConfig(name="b", min_input_tokens=100, max_input_tokens=200,
                        retrospective=RetrospectiveConfig(share=share), **(stage2 or {"steps": 5}))]


def _balanced(**kw) -> RetrospectiveSampler:
    return RetrospectiveSampler([SHORT, LONG], _stages(), batch_size=6, seed=5, drop_last=True, tasks=TASKS, **kw)


def _draw(s: RetrospectiveSampler, n: int) -> list[list[str]]:
    out = []
    for _ in range(n):
        b = s.next_batch()
        # math items are solved half the time, the others always: only math items are hard (drop_solved)
        s.observe({i: [1.0, 0.0] if TASKS[i] == "math" else [1.0, 1.0] for i in b.item_ids}, step=b.index)
        out.append(b.item_ids)
    return out


def test_apportion_is_exact_and_documented() -> None:
    # equal weights: floor(10/3) = 3 each, the remainder 1 to the first task by name
    assert apportion(10, {"qa": 1, "math": 1, "choice": 1}) == {"qa": 3, "math": 3, "choice": 4}
    # weights 2:1:1 of 8 -> 4, 2, 2
    assert apportion(8, {"math": 2, "qa": 1, "choice": 1}) == {"math": 4, "qa": 2, "choice": 2}
    # 3 hard items of math already in the batch: 5 own slots bring qa and choice up to math (3, 3, 2 by name)
    assert apportion(5, {"qa": 1, "math": 1, "choice": 1}, {"math": 3}) == {"qa": 2, "math": 0, "choice": 3}
    assert task_needs({"qa": 1, "math": 1, "choice": 1}, 10) == {"qa": 3, "math": 3, "choice": 4}


def test_task_is_the_route_kind_or_the_source_without_length_bucket() -> None:
    assert [task_of(s, "kind") for s in ("docmath_0_20000", "musique_0_20000", "long_toc_choices_40000_plus")] == [
        "math", "qa", "choice"]
    assert [task_of(s, "source") for s in ("docmath_20000_40000", "long_toc_choices_40000_plus", "qa_test")] == [
        "docmath", "long_toc_choices", "qa_test"]


def test_every_batch_holds_exact_shares_without_repeats_and_small_tasks_cycle_whole() -> None:
    s = _balanced()
    batches = _draw(s, 6)
    for b in batches:
        assert Counter(TASKS[i] for i in b) == {"qa": 2, "math": 2, "choice": 2}
        assert len(set(b)) == len(b)
    choice = [i for b in batches for i in b if TASKS[i] == "choice"]
    assert sorted(choice[:6]) == sorted(choice[6:]) == [f"c{i:02d}" for i in range(6)]  # passes cover the task
    # stage 2: the 2 hard items (share 1/3 of 6, all math) count towards their task: the batch stays 2/2/2,
    # its own-band part is 2 qa + 2 choice
    s.set_stage(1)
    for b in _draw(s, 5):
        assert Counter(TASKS[i] for i in b) == {"qa": 2, "math": 2, "choice": 2}
        assert sorted(i for i in b if i in SHORT) == sorted(i for i in b if TASKS[i] == "math")


def test_resume_mid_stage_gives_the_batches_of_a_straight_run() -> None:
    straight = _balanced()
    _draw(straight, 3)
    straight.set_stage(1)
    first, rest = _draw(straight, 2), _draw(straight, 4)

    s = _balanced()
    _draw(s, 3)
    s.set_stage(1)
    assert _draw(s, 2) == first
    state = json.loads(json.dumps(s.state_dict()))
    resumed = _balanced()
    resumed.load_state_dict(state)
    resumed.set_stage(1)  # what the loop does after a resume: a no-op mid-stage
    assert _draw(resumed, 4) == rest
    with pytest.raises(ValueError, match="task weights differ"):
        _balanced(task_weights={"qa": 2}).load_state_dict(state)
    with pytest.raises(ValueError, match="was task-balanced, this run is not"):
        RetrospectiveSampler([SHORT, LONG], _stages(), batch_size=6, seed=5, drop_last=True).load_state_dict(state)


def test_too_small_task_and_unknown_weight_are_named() -> None:
    with pytest.raises(ValueError, match=r"stage 'b': task 'choice' has 7 items, fewer than the 8 its share"):
        RetrospectiveSampler([SHORT, LONG], _stages(), batch_size=24, seed=5, drop_last=False, tasks=TASKS)
    with pytest.raises(ValueError, match=r"weights names \['mcq'\].*the tasks are \['choice', 'math', 'qa'\]"):
        _balanced(task_weights={"mcq": 2.0})


def test_epoch_stage_lasts_as_many_batches_balanced_or_not() -> None:
    def batches(**kw) -> int:
        s = RetrospectiveSampler([SHORT, LONG], _stages(share=0.0, epochs=2), batch_size=6, seed=5, drop_last=True,
                                 **kw)
        s.set_stage(1)
        n = 0
        while not s.exhausted():
            s.next_batch()
            n += 1
        return n

    assert batches(tasks=TASKS) == batches() == 8  # 2 passes x 24 // 6


def test_option_off_keeps_the_qwenlong_l1_item_sequence() -> None:
    # Recorded from the sampler before task balancing existed (commit 20df839), same inputs.
    short, long_ = [f"s{i:02d}" for i in range(10)], [f"l{i:02d}" for i in range(7)]
    stages = [StageConfig(name="a", max_input_tokens=100, steps=3),
              StageConfig(name="b", min_input_tokens=100, max_input_tokens=200, steps=3,
                          retrospective=RetrospectiveConfig(share=0.5))]
    s = RetrospectiveSampler([short, long_], stages, batch_size=4, seed=11, drop_last=True)
    out = []
    for _ in range(4):
        b = s.next_batch()
        out.append(b.item_ids)
        s.observe({i: [float(int(i[1:]) % 3 == 0), 0.0] for i in b.item_ids}, step=1)
    s.set_stage(1)
    out += [s.next_batch().item_ids for _ in range(4)]
    assert out == [["s03", "s00", "s09", "s07"], ["s05", "s08", "s04", "s06"], ["s05", "s06", "s09", "s01"],
                   ["s08", "s07", "s04", "s03"], ["l01", "l06", "s06", "s03"], ["l04", "l02", "s03", "s09"],
                   ["l03", "l00", "s03", "s06"], ["l02", "l04", "s03", "s00"]]
    assert "task_balance" not in s.state_dict()
    # and the run's default config builds that sampler: no item -> task map
    run = SimpleNamespace(cfg=RunConfig(), data=SimpleNamespace(train=[]))
    assert item_tasks(run) is None
