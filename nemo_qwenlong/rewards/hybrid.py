"""Hybrid reward: rule match ⊕ LLM judge, routed by `data_source` (spec §3.1-3.3, §8).

Per response a `RewardResult` record. score = max(rule, judge). The judge is asked only when the
rule says 0 (`judge_when="rule_fail"`, training), for every item (`"always"`, evaluation), or
never; never for multiple choice, and never when no answer could be extracted (it would be judging
"None"). When judge calls fail, the step goes on with the rule score and the failures are counted;
above `max_failure_rate` of a batch's judge calls, `JudgeUnavailableError` stops the run.

Ground truths are answer sentences in the released data ("…the answer is X", "The correct answer
is (B)"); a bare gold ("Paris", "12.5", "B", as in the evaluation sets) is used as it is.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from nemo_qwenlong.config.pipeline import RewardConfig
from nemo_qwenlong.rewards.extract import answer_region, extract_choice, extract_qa_answer
from nemo_qwenlong.rewards.judge import JudgeClient, JudgeCounters, JudgeRequest
from nemo_qwenlong.data.kind import Kind, route
from nemo_qwenlong.rewards.rule import choice_match, docmath_match, extract_math_answer, sub_exact_match

log = logging.getLogger(__name__)

class JudgeUnavailableError(RuntimeError):
    """Too many judge calls of one batch failed (reward.judge.max_failure_rate)."""


@dataclass(frozen=True)
class RewardItem:
    response: str | None
    ground_truth: str
    data_source: str
    question: str = ""


@dataclass
class RewardResult:
    score: float
    rule_score: float
    judge_score: float | None
    decided_by: Literal["rule", "judge", "no_answer"]
    kind: Kind
    extracted: str | None
    gold: str
    judge_latency_s: float | None = None
    judge_cached: bool = False
    error: str | None = None

    @property
    def correct(self) -> bool:
        """Unshaped correctness (r_answer == 1), the dynamic-sampling signal."""
        return self.score >= 1.0


@dataclass
class RewardStats:
    items: int = 0
    judge: JudgeCounters = field(default_factory=JudgeCounters)

    @property
    def judge_failure_rate(self) -> float:
        return self.judge.failures / self.judge.requested if self.judge.requested else 0.0

    def as_metrics(self) -> dict[str, float]:
        j = self.judge
        return {"reward/items": float(self.items), "reward/judge_requested": float(j.requested),
                "reward/judge_cache_hits": float(j.cache_hits), "reward/judge_failures": float(j.failures),
                "reward/judge_failure_rate": self.judge_failure_rate, "reward/judge_retries": float(j.retries)}


def gold_answer(kind: Kind, ground_truth: str) -> str:
    if kind == "choice":
        return extract_choice(ground_truth) or ground_truth.strip().strip("()").upper()
    if kind == "math":
        return extract_math_answer(ground_truth) or ground_truth.strip()
    return extract_qa_answer(ground_truth) or ground_truth.strip()


def rule_score(kind: Kind, region: str | None, gold: str, *, docmath_decimals: int) -> tuple[float, str | None]:
    """(0/1 rule score, extracted prediction) for one answer region."""
    if kind == "choice":
        pred = extract_choice(region)
        return float(choice_match(pred, gold)), pred
    if kind == "math":
        pred = extract_math_answer(region)
        return float(pred is not None and docmath_match(pred, gold, decimals=docmath_decimals)), pred
    pred = extract_qa_answer(region)
    return float(sub_exact_match(pred, gold)), pred


class HybridReward:
    """`protocol="qwenlong"`: the released training reward's rule (`eval.released.training_rule`) and judge
    call instead of ours; `require_think` should then be True, as released."""

    def __init__(
        self,
        *,
        judge: JudgeClient | None,
        judge_when: Literal["rule_fail", "always", "never"],
        require_think: bool,
        docmath_decimals: int,
        max_failure_rate: float,
        protocol: Literal["strict", "qwenlong"] = "strict",
    ) -> None:
        self.protocol = protocol
        self.judge = judge
        self.judge_when = judge_when
        self.require_think = require_think
        self.docmath_decimals = docmath_decimals
        self.max_failure_rate = max_failure_rate

    def score(self, items: Sequence[RewardItem]) -> tuple[list[RewardResult], RewardStats]:
        stats = RewardStats(items=len(items))
        results: list[RewardResult] = []
        for item in items:
            kind = route(item.data_source)
            gold = gold_answer(kind, item.ground_truth)
            region = answer_region(item.response, require_think=self.require_think)
            if self.protocol == "qwenlong":
                from nemo_qwenlong.eval.released import training_rule

                rule, pred, gold = training_rule(kind, region, item.ground_truth)
            else:
                rule, pred = rule_score(kind, region, gold, docmath_decimals=self.docmath_decimals)
            decided = "rule" if pred is not None else "no_answer"
            results.append(RewardResult(score=rule, rule_score=rule, judge_score=None, decided_by=decided,
                                        kind=kind, extracted=pred, gold=gold))
        asked = [i for i, r in enumerate(results) if self._wants_judge(r)]
        if asked and self.judge is not None:
            before = JudgeCounters(**vars(self.judge.counters))
            outcomes = self.judge.judge([JudgeRequest(items[i].question, results[i].extracted, results[i].gold) for i in asked])
            for i, outcome in zip(asked, outcomes):
                r = results[i]
                r.judge_latency_s, r.judge_cached, r.error = outcome.latency_s, outcome.cached, outcome.error
                if outcome.verdict is not None:
                    r.judge_score = float(outcome.verdict)
                    if r.judge_score > r.score:
                        r.score, r.decided_by = r.judge_score, "judge"
            stats.judge = _delta(self.judge.counters, before)
            self._check_failures(stats, results)
        return results, stats

    def _wants_judge(self, r: RewardResult) -> bool:
        if self.judge is None or r.kind == "choice" or not r.extracted or self.judge_when == "never":
            return False
        return self.judge_when == "always" or r.rule_score == 0.0

    def _check_failures(self, stats: RewardStats, results: list[RewardResult]) -> None:
        if not stats.judge.failures:
            return
        rate = stats.judge_failure_rate
        errors = [r.error for r in results if r.error]
        log.warning("judge: %d of %d calls failed (%.0f%%), rule rewards used for those; last error: %s",
                    stats.judge.failures, stats.judge.requested, 100 * rate, errors[-1] if errors else "?")
        if rate > self.max_failure_rate:
            raise JudgeUnavailableError(
                f"{stats.judge.failures} of {stats.judge.requested} judge calls failed ({rate:.0%}), above "
                f"reward.judge.max_failure_rate={self.max_failure_rate}; last error: {errors[-1] if errors else '?'}. "
                "Check the judge server (reward.judge.base_url) or raise the limit to continue on rule rewards."
            )


def _delta(after: JudgeCounters, before: JudgeCounters) -> JudgeCounters:
    return JudgeCounters(**{k: getattr(after, k) - getattr(before, k) for k in JudgeCounters.__dataclass_fields__})


def build_reward(cfg: RewardConfig, *, run_dir: str | None = None) -> HybridReward:
    """The hybrid reward of a run from its `reward` config section (no judge when judge_when='never')."""
    judge = None
    if cfg.judge_when != "never":
        from nemo_qwenlong.rewards.judge import STRICT

        protocol = STRICT
        if cfg.protocol == "qwenlong":
            from nemo_qwenlong.eval.released import training_judge_protocol

            protocol = training_judge_protocol()
        judge = JudgeClient(cfg.judge, run_dir=run_dir, protocol=protocol)
    return HybridReward(judge=judge, judge_when=cfg.judge_when, require_think=cfg.require_think,
                        docmath_decimals=cfg.docmath_decimals, max_failure_rate=cfg.judge.max_failure_rate,
                        protocol=cfg.protocol)
