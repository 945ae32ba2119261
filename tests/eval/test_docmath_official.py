"""`docmath_official`, rule path: DocMath-Eval's chain-of-thought verdict on answers of the shapes models
write, with the final answer taken as written (the phrase after the last "the answer is", to the end of
its sentence). Each expected verdict is derived by hand from DocMath-Eval's code (yale-nlp/DocMath-Eval
@ 5c9b9b44: `evaluate_cot_pred_file` "none" check, `normalize`, `get_acc`, `compare_two_numbers` with
3-decimal ceil rounding) given a perfect extractor; `old` is what the metric gave before (the first
number after the first "the answer is", the whole text when none, 2 decimals)."""

from __future__ import annotations

import pytest

from nemo_qwenlong.eval.metrics import Row, combine, rule_scores

THINK = "<think>Let me compute step by step: 3.5 + 2 = 5.5, the answer is 5.5? No.</think>\n"

# (case, answer region, gold, DocMath-Eval verdict, old verdict)
SHAPES = [
    # "RMB" dropped -> " 500"; the 1-2-char unit-before pattern keeps "500" -> 500 == 500.0.
    # old: "RMB" is not one of its prefix symbols, no number found -> whole sentence -> eval fails -> 0
    ("rmb_prefix", "Therefore, the answer is RMB 500.", "500.0", 1, 0),
    # "approximately" removed -> "42" -> 42 == 42.0 (old: no match, whole sentence -> 0)
    ("approximately", "The answer is approximately 42.", "42.0", 1, 0),
    # eval("2/3") = 0.6667; ceil(666.67)/1000 = 0.667 = ceil(666.7)/1000 -> 1.
    # old: "2" vs 0.6667: ratio 3 not a power of ten, no slip, 2 != 0.67, outside 0.15 % -> 0
    ("fraction", "Therefore, the answer is 2/3.", "0.6667", 1, 0),
    # eval("0.1 + 0.2") = 0.30000000000000004, within 0.15 % of 0.3 -> 1 (old: "0.1" vs 0.3 -> 0)
    ("expression", "Therefore, the answer is 0.1 + 0.2.", "0.3", 1, 0),
    # "million" dropped -> "42  dollars" (two spaces: no unit pattern matches) -> eval fails -> 0 vs 4.2e7 -> 0.
    # old: "42" vs 42000000: log10 ratio exactly 6 -> 1
    ("million_dollars", "Therefore, the answer is 42 million dollars.", "42000000.0", 0, 1),
    # the last "the answer is" is the final answer: 7 (old: the first, 5 -> 0)
    ("several_phrases", "Therefore, the answer is 5. Correction: the answer is 7.", "7", 1, 0),
    # a trailing sentence is not part of the answer: "approximately 42" -> 1 (old: no match -> whole text -> 0)
    ("trailing_sentence", "Therefore, the answer is approximately 42. This assumes the 2019 rate holds.", "42.0", 1, 0),
    # the decimal point of "$1.5" ends no sentence: "$1.5 million" -> "1.5 " -> 1.5, ratio 10^6 -> 1 (old: "$1.5" -> 1)
    ("decimal_then_trailing", "So the answer is $1.5 million. That is up 5.2% from 2019.", "1500000.0", 1, 1),
    # an extraction holding "none" scores 0 before get_acc.
    # old: no number -> whole text -> eval fails -> 0, and 0 vs gold 0.0 passes within_eps -> 1
    ("none_phrase", "Therefore, the answer is none of the above.", "0.0", 0, 1),
    # colon and markdown bold around the answer: "12.5%" -> 12.5 -> 1 (old: ":" breaks its pattern -> 0)
    ("colon_bold", "Hence the answer is: **12.5%**.", "12.5", 1, 0),
    # a line break ends the phrase: "12.5" -> 1 (old: 1)
    ("newline_end", "the answer is 12.5\nExplanation: 3 of 4 items.", "12.5", 1, 1),
    # no "the answer is": the region itself is the phrase: "USD" dropped -> " 500" -> 500 -> 1 (old: 1)
    ("bare_answer", "USD 500", "500.0", 1, 1),
]


def _official(region: str, gold: str) -> dict:
    row = Row(id="x", benchmark="docmath", response=THINK + region, answers=[gold], question="Q?")
    return combine(row, rule_scores(row), None, None, judged=False)


@pytest.mark.parametrize(("case", "region", "gold", "expected", "old"), SHAPES, ids=[s[0] for s in SHAPES])
def test_rule_path_gives_docmath_evals_verdict(case: str, region: str, gold: str, expected: int, old: int) -> None:
    assert _official(region, gold)["scores"]["docmath_official"] == float(expected)


def test_the_old_metric_disagreed_on_these_shapes() -> None:
    # the table's own record: the old metric disagreed with DocMath-Eval on 9 of the 12 shapes
    assert sum(1 for s in SHAPES if s[3] != s[4]) == 9


def test_rule_path_records_the_phrase_it_scored() -> None:
    out = _official("So the answer is $1.5 million. That is up 5.2% from 2019.", "1500000.0")
    assert out["docmath_official"] == {"extractor": "rule", "answer": "$1.5 million"}


def test_three_decimal_rounding_of_docmath_eval() -> None:
    # 0.129 vs 0.123: ceil to 3 decimals 0.129 != 0.123; |diff| 0.006 > 0.15 % of 0.123; no ×100 slip -> 0.
    # (QwenLong-L1's copy rounds to 2 decimals: 0.13 == 0.13 -> 1; its `qwenlong` rule keeps that.)
    row = Row(id="x", benchmark="docmath", response="</think>Therefore, the answer is 0.129.", answers=["0.123"])
    out = combine(row, rule_scores(row), None, None, judged=False)
    assert out["scores"]["docmath_official"] == 0.0 and out["qwenlong"]["rule"] == 1.0


def test_a_given_prediction_is_the_extraction() -> None:
    # a row's `prediction` is what another extractor returned: "None" scores 0 even against a gold 0
    row = Row(id="x", benchmark="docmath", response="irrelevant", answers=["0.0"], prediction="None")
    assert combine(row, rule_scores(row), None, None, judged=False)["scores"]["docmath_official"] == 0.0
