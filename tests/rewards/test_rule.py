"""Rule scorers: hand cases, the empty-string rule, and agreement with the peer vectors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nemo_qwenlong.rewards.numbers import parse_answer_value, parse_number
from nemo_qwenlong.rewards.rule import (
    choice_match,
    docmath_eval_match,
    docmath_match,
    exact_match,
    normalize_answer,
    numbers_match,
    qa_f1,
    sub_exact_match,
)

PEERS = Path(__file__).resolve().parents[3] / "shared" / "data" / "peer-vectors"
DOCMATH_DEVIATIONS = {"usd_prefix", "approx_symbol", "third_as_fraction"}  # listed in rewards/rule.py


def _rows(name: str) -> list[dict]:
    path = PEERS / name
    assert path.exists(), f"peer vectors missing: {path} (shared/ must sit beside the checkout)"
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_normalize_and_matches() -> None:
    assert normalize_answer("  The  Beatles! ") == "beatles"
    assert exact_match("the Beatles", "Beatles") and not exact_match("Beatles band", "Beatles")
    assert sub_exact_match("The Beatles band", "Beatles")  # containment, as QwenLong-L1 scores QA
    assert sub_exact_match("Beatles", "The Beatles band")


@pytest.mark.parametrize("pred", ["the", "", "  .  ", None, "a an the"])
def test_empty_normalised_prediction_never_matches(pred: str | None) -> None:
    # the released containment counts "" as a substring of everything; we do not
    assert not sub_exact_match(pred, "Paris") and not exact_match(pred, "Paris")
    assert not sub_exact_match("Paris", "the")


def test_f1_hand_value() -> None:
    # pred tokens {barack, obama, jr}, gold {barack, obama}: p = 2/3, r = 1, f1 = 0.8
    assert qa_f1("Barack Obama Jr", ["Barack Obama"]) == pytest.approx(0.8)
    assert qa_f1("x", []) == 0.0


def test_f1_identical_to_longbench_on_every_peer_vector() -> None:
    rows = _rows("longbench_f1_vectors.jsonl")
    assert len(rows) == 75
    for r in rows:
        assert qa_f1(r["pred"], r["golds"], dataset=r["dataset"]) == r["score"], r["id"]


def test_docmath_agrees_with_released_eval_except_documented_deviations() -> None:
    rows = _rows("docmath_numeric_vectors.jsonl")
    seen = set()
    for r in rows:
        ours = int(docmath_eval_match(f"Therefore, the answer is {r['pred']}.", r["gold_str"], decimals=2))
        if r["case"] in DOCMATH_DEVIATIONS:
            seen.add(r["case"])
            assert ours == r["official_acc"] != r["ql_eval_acc"], r["case"]  # we side with DocMath-Eval
        else:
            assert ours == r["ql_eval_acc"], (r["case"], r["pred"], r["gold_str"])
    assert seen == DOCMATH_DEVIATIONS


@pytest.mark.parametrize(
    "text, value",
    [("1,234,567", 1234567.0), ("1,23,456", 123456.0), ("-3.5", -3.5), ("−3.5", -3.5), ("$-5", -5.0),
     ("USD 500", 500.0), ("1.5e-3", 0.0015), ("1.5 × 10^3", 1500.0), ("10^-2", 0.01), ("1/3", 1 / 3),
     ("$1.2 million", 1.2e6), ("42 percent", 42.0), ("x = 7", 7.0), ("≈ 42", 42.0), ("12.5.", 12.5),
     ("2^10", None), ("None", None), ("", None), ("1/0", None)],
)
def test_number_parser(text: str, value: float | None) -> None:
    got = parse_number(text)
    assert (got is None) if value is None else got == pytest.approx(value)


def test_parser_never_evaluates_code() -> None:
    # text that eval() would execute is just text here
    assert parse_number("__import__('os').system('echo pwned')") is None
    assert parse_answer_value("yes, 12") is True


def test_numbers_match_rules_hand_cases() -> None:
    assert numbers_match(0.125, 12.5)  # power of ten (fraction vs percent)
    assert numbers_match(7.0, 7.0049)  # within 0.15 %
    assert not numbers_match(12.6, 12.5)
    assert not numbers_match(100.0, 99.8)
    assert numbers_match(0.0, 0.0) and not numbers_match(0.0, 0.0001)
    # ceil-rounding: 2 decimals (eval) vs 3 (training)
    assert numbers_match(1.234, 1.2301, decimals=2) and not numbers_match(1.234, 1.2301, decimals=3)


def test_docmath_booleans_and_missing_gold() -> None:
    assert docmath_match("yes", "True") and not docmath_match("no", "True")
    assert not docmath_match("12", "yes")
    with pytest.raises(ValueError, match="no number or boolean"):
        docmath_match("12", "unknown")


def test_choice_match() -> None:
    assert choice_match("b", "B") and not choice_match(None, "B") and not choice_match("A", "B")
