"""Hybrid routing and scoring without a judge (the judge paths run against a real server elsewhere)."""

from __future__ import annotations

import pytest

from nemo_qwenlong.data.kind import route
from nemo_qwenlong.rewards.hybrid import HybridReward, RewardItem


def _reward(**kw) -> HybridReward:
    args = dict(judge=None, judge_when="rule_fail", require_think=True, docmath_decimals=3, max_failure_rate=0.5)
    return HybridReward(**(args | kw))


def test_routing_by_data_source_substring() -> None:
    assert route("long_toc_choices_0_20000") == "choice"
    assert route("docmath_20000_40000") == "math"
    assert route("multihoprag_0_20000") == route("musique_0_20000") == route("qa_test") == "qa"
    with pytest.raises(ValueError, match="unknown data_source 'poetry'"):
        route("poetry")


def test_rule_rewards_per_kind() -> None:
    items = [
        RewardItem("<think>..</think>Therefore, the answer is The Beatles.", "the answer is Beatles", "musique_0_20000"),
        RewardItem("<think>..</think>Therefore, the answer is $1,200,000.", "Therefore, the answer is 1.2 million.", "docmath_0_20000"),
        RewardItem("<think>..</think>The correct answer is (C).", "The correct answer is (C)", "long_toc_choices_0_20000"),
        RewardItem("Therefore, the answer is The Beatles.", "the answer is Beatles", "musique_0_20000"),  # no </think>
        RewardItem("<think>..</think>I do not know.", "the answer is Beatles", "multihoprag_0_20000"),
    ]
    results, stats = _reward().score(items)
    assert [r.score for r in results] == [1.0, 1.0, 1.0, 0.0, 0.0]
    assert [r.kind for r in results] == ["qa", "math", "choice", "qa", "qa"]
    assert [r.decided_by for r in results] == ["rule", "rule", "rule", "no_answer", "no_answer"]
    assert results[0].extracted == "The Beatles" and results[0].gold == "Beatles"
    assert results[0].correct and not results[4].correct
    assert stats.items == 5 and stats.judge.requested == 0


def test_eval_mode_reads_whole_response_and_bare_golds() -> None:
    results, _ = _reward(require_think=False).score(
        [RewardItem("Therefore, the answer is Paris.", "Paris", "hotpotqa"),
         RewardItem("Therefore, the answer is 12.50", "12.5", "docmath_test")]
    )
    assert [r.score for r in results] == [1.0, 1.0]


def test_build_reward_from_config(tmp_path) -> None:
    from nemo_qwenlong.config import load_config
    from nemo_qwenlong.rewards.hybrid import build_reward

    off = build_reward(load_config(None, ["reward.judge_when=never"]).reward)
    assert off.judge is None and off.require_think and off.docmath_decimals == 3
    on = build_reward(load_config(None, ["reward.judge.concurrency=4"]).reward, run_dir=str(tmp_path))
    assert on.judge is not None and on.judge.cfg.concurrency == 4 and on.max_failure_rate == 0.5
    assert (tmp_path / "judge_cache.sqlite").exists()  # relative cache paths live in the run dir
