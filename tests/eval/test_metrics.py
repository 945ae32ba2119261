"""Per-item metrics on hand-written cases: the released quirks `qwenlong` must reproduce, `strict` fixing
them, F1/EM/DocMath official, and the `eval()` stand-in that never runs model text."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nemo_qwenlong.eval import docmath_eval, released
from nemo_qwenlong.eval.metrics import Row, Verdict, combine, rule_scores
from nemo_qwenlong.eval.safe_expr import Opaque, UnsafeExpression, evaluate

PEER = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "peer-vectors"


def scores(response: str | None, answers: list[str], benchmark: str = "hotpotqa", **judges: Verdict | None) -> dict:
    row = Row(id="x", benchmark=benchmark, response=response, answers=answers, question="Q?")
    judged = "released" in judges
    return combine(row, rule_scores(row), judges.get("released"), judges.get("strict"), judged=judged)


def test_capital_the_answer_is_scores_zero_released_and_one_strict() -> None:
    out = scores("<think>x</think>\nThe answer is Paris.", ["Paris"])
    assert out["scores"]["qwenlong"] == 0.0 and out["qwenlong"]["pred"] is None
    assert out["scores"]["strict"] == 1.0 and out["strict"]["pred"] == "Paris"


def test_the_matches_anything_released_not_strict() -> None:
    out = scores("<think>x</think>\nTherefore, the answer is the.", ["Barack Obama"])
    assert out["qwenlong"]["pred"] == "the"
    assert out["scores"]["qwenlong"] == 1.0  # normalises to "" and "" is inside every string
    assert out["scores"]["strict"] == 0.0


def test_empty_prediction_scores_zero_in_both() -> None:
    out = scores("<think>x</think>\nTherefore, the answer is .", ["Paris"])
    assert out["qwenlong"]["pred"] == "" and out["scores"]["qwenlong"] == 0.0 and out["scores"]["strict"] == 0.0


def test_qa_takes_the_last_phrase_and_sub_em_on_answers_0_only() -> None:
    out = scores("</think>the answer is Lyon, no wait, the answer is Paris", ["Paris", "Lyon"])
    assert out["qwenlong"]["pred"] == "Paris" and out["scores"]["qwenlong"] == 1.0
    out = scores("</think>Therefore, the answer is Lyon.", ["Paris", "Lyon"])
    assert out["scores"]["qwenlong"] == 0.0  # answers[0] only
    assert out["scores"]["em"] == 1.0  # EM/F1 take any gold


def test_answer_region_fallbacks() -> None:
    # no </think>: the whole response; an empty region after </think>: the whole response too (released)
    assert released.answer_region("  Therefore, the answer is X.  ") == "Therefore, the answer is X."
    assert released.answer_region("Therefore, the answer is X. </think>  ") == "Therefore, the answer is X. </think>"
    assert released.answer_region("a</think>b</think> c ") == "c"
    out = scores("Therefore, the answer is Paris. </think>", ["Paris"])
    assert out["scores"]["qwenlong"] == 1.0


def test_docmath_first_match_released_last_match_strict() -> None:
    text = "<think>..</think>Therefore, the answer is 5. Correction: the answer is 7."
    out = scores(text, ["7"], benchmark="docmath")
    assert out["qwenlong"]["pred"] == "5" and out["scores"]["qwenlong"] == 0.0
    assert out["strict"]["pred"] == "7" and out["scores"]["strict"] == 1.0
    # DocMath-Eval's extractor (a language model) reads the final answer, the corrected 7
    assert out["scores"]["docmath_official"] == 1.0 and out["docmath_official"]["answer"] == "7"


def test_docmath_gold_is_reextracted_from_its_sentence() -> None:
    assert released.docmath_gold("12.5") == "12.5"
    assert released.docmath_gold("1e-05") == "1"  # the released regex stops at "e"
    assert released.docmath_gold("True") is None
    out = scores("</think>the answer is 12.5", ["True"], benchmark="docmath")
    assert out["released_dropped"] and out["qwenlong"]["rule"] is None and "released scorer" in out["failure"]


def test_judge_answer_1_released() -> None:
    # QA: the extracted prediction as is, None when extraction failed (formatted "None")
    assert released.judge_answer_1("</think>I think Paris", None, math=False) is None
    assert "Answer 1: None\n" in released.judge_messages("Q", None, "Paris")[1]["content"]
    # DocMath: the region minus "Therefore, the answer is" when the numeric extraction failed
    assert released.judge_answer_1("<think>a</think>Therefore, the answer is twelve.", None, math=True) == "twelve"
    assert released.judge_answer_1("x", "12", math=True) == "12"
    user = released.judge_messages("Problem text", "12", "12.0")[1]["content"]
    assert user == "\nProblem: Problem text\nAnswer 1: 12\nAnswer 2: 12.0\n"


def test_released_verdict_is_yes_anywhere() -> None:
    assert released.parse_verdict("NOT YES") is True and released.parse_verdict("[[NO]]") is False
    assert released.parse_verdict(None) is None


def test_final_is_max_of_rule_and_judge_and_dropped_items() -> None:
    out = scores("</think>Therefore, the answer is Lyon.", ["Paris"], released=Verdict(True), strict=Verdict(False))
    assert out["scores"] == {**out["scores"], "qwenlong": 1.0, "judge": 1.0, "strict": 0.0}
    lost = scores("</think>Therefore, the answer is Paris.", ["Paris"], released=Verdict(None, "RateLimitError"),
                  strict=Verdict(True))
    assert lost["released_dropped"] and lost["scores"]["qwenlong"] == 1.0 and "released judge" in lost["failure"]
    failed = scores(None, ["Paris"], released=None, strict=None)
    assert failed["failure"].startswith("generation") and failed["scores"]["qwenlong"] == 0.0


def test_f1_first_line_rule_and_answer_f1() -> None:
    out = scores("Paris\nBecause the passage says so.", ["Paris"], benchmark="triviaqa")
    assert out["scores"]["f1"] == 1.0
    out = scores("Paris\nBecause the passage says so.", ["Paris"], benchmark="hotpotqa")
    assert out["scores"]["f1"] == pytest.approx(1 / 3)
    out = scores("</think>Therefore, the answer is Paris.", ["Paris"])
    assert out["scores"]["f1"] == pytest.approx(0.4) and out["scores"]["f1_answer"] == 1.0


def test_docmath_official_scores_a_bare_prediction() -> None:
    row = Row(id="x", benchmark="docmath", response="USD 500", answers=["500.0"])
    assert rule_scores(row).values["docmath_official"] == 1.0
    row = Row(id="x", benchmark="docmath", response="2^10", answers=["1024.0"])
    assert rule_scores(row).values["docmath_official"] == 0.0  # eval gives 2 XOR 10 = 8


def test_safe_expr_matches_eval_on_arithmetic_and_runs_no_code(tmp_path: Path) -> None:
    sentinel = tmp_path / "pwned"
    payloads = [f"__import__('os').system('touch {sentinel}')", f"open('{sentinel}', 'w')",
                "(lambda: 1)()", "[x for x in range(3)]", "().__class__.__base__.__subclasses__()"]
    for text in payloads:
        with pytest.raises(UnsafeExpression):
            evaluate(text)
        assert docmath_eval.normalize(text) in (0, "0")
    assert not sentinel.exists()
    for text in ("2^10", "-5", "1.5*1000", "math.pow(10, 3)*1.5", "(1, 2)", "True", "'(a)'", "7//2", "1e3"):
        assert evaluate(text) == eval(text, {"math": __import__("math")})  # noqa: S307 - fixed test strings
    assert isinstance(evaluate("math"), Opaque)
    with pytest.raises(UnsafeExpression):
        evaluate("9**9**9")


def test_training_protocol_equals_the_released_training_reward() -> None:
    """reward.protocol=qwenlong: the released training reward's verdict on every DocMath peer vector."""
    from nemo_qwenlong.config.pipeline import RewardConfig
    from nemo_qwenlong.rewards.hybrid import RewardItem, build_reward

    reward = build_reward(RewardConfig(protocol="qwenlong", judge_when="never"))
    rows = [json.loads(line) for line in (PEER / "docmath_numeric_vectors.jsonl").open()]
    items = [RewardItem(response=f"<think>x</think>{r['ql_eval_response']}", data_source="docmath",
                        ground_truth=f"Therefore, the answer is {r['gold_str']}.") for r in rows]
    results, _ = reward.score(items)
    assert [res.rule_score for res in results] == [float(r["ql_train_reward"]) for r in rows]
    qa, _ = reward.score([RewardItem("<think>x</think>The answer is Paris", "Therefore, the answer is Paris.", "musique"),
                          RewardItem("<think>x</think>the answer is the", "Therefore, the answer is Paris.", "musique"),
                          RewardItem("no think: the answer is Paris", "Therefore, the answer is Paris.", "musique"),
                          RewardItem("<think>x</think>The correct answer is (B)", "The correct answer is (B)", "long_toc_choices")])
    assert [r.rule_score for r in qa] == [0.0, 1.0, 0.0, 1.0]
    strict, _ = build_reward(RewardConfig(judge_when="never")).score(
        [RewardItem("<think>x</think>The answer is Paris", "Therefore, the answer is Paris.", "musique")])
    assert strict[0].rule_score == 1.0
