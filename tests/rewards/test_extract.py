"""Answer extraction: think region, QA phrase, numbers, choices."""

from __future__ import annotations

import pytest

from nemo_qwenlong.rewards.extract import (
    answer_region,
    extract_choice,
    extract_qa_answer,
)
from nemo_qwenlong.rewards.rule import extract_math_answer


def test_answer_region_after_last_think() -> None:
    assert answer_region("a</think>b</think> tail<｜end▁of▁sentence｜>", require_think=True) == "tail"
    assert answer_region("no think here", require_think=True) is None  # training: scores 0
    assert answer_region("no think here", require_think=False) == "no think here"  # eval fallback
    assert answer_region(None, require_think=False) is None


def test_qa_answer_last_occurrence_any_case() -> None:
    assert extract_qa_answer("the answer is Rome. Wait, the answer is **Paris**.") == "Paris"
    assert extract_qa_answer("The answer is Paris.") == "Paris"  # released: case-sensitive → None
    assert extract_qa_answer("Paris") is None
    assert extract_qa_answer("Therefore, the answer is .") is None
    assert extract_qa_answer("the answer is Paris<｜end▁of▁sentence｜>") == "Paris"


def test_math_answer_takes_last_phrase_with_a_number() -> None:
    assert extract_math_answer("the answer is 3. Rechecking, the answer is $1,200.") == "$1,200"
    assert extract_math_answer("Therefore, the answer is The answer is 12.5.") == "12.5"
    assert extract_math_answer("the answer is unclear") is None
    assert extract_math_answer("Therefore, the answer is yes.") == "yes"


def test_choice_letter() -> None:
    assert extract_choice("The correct answer is (b)") == "B"
    assert extract_choice("**The correct answer is C**") == "C"
    assert extract_choice("the correct answer is (A) ... no, The correct answer is (D).") == "D"
    assert extract_choice("The correct answer is E") is None
    assert extract_choice(None) is None


@pytest.mark.parametrize("text", ["\udcff\udcfe the answer is Paris", "x" * 200_000 + " the answer is Paris"])
def test_odd_and_very_long_responses(text: str) -> None:
    assert extract_qa_answer(text) == "Paris"
