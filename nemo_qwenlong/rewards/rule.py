"""Rule scorers: normalised EM, containment EM, LongBench token F1, DocMath numeric match, choice letters.

Peer agreement (tests/rewards/test_peer_vectors.py):
- `qa_f1` equals LongBench's official `qa_f1_score` (max over golds) on every vector in
  shared/data/peer-vectors/longbench_f1_vectors.jsonl.
- `docmath_eval_match` agrees with QwenLong-L1's eval (`ql_eval_acc`) on every vector of
  docmath_numeric_vectors.jsonl except these deliberate deviations, where we agree with DocMath-Eval's
  official scorer instead:
    * usd_prefix        "USD 500" vs 500      ours 1 (the released regex needs a digit right after the phrase)
    * approx_symbol     "≈ 42" vs 42          ours 1 (same regex limitation with a space after ≈)
    * third_as_fraction "1/3" vs 0.3333…      ours 1 (we parse fractions; the released regex stops at "/")
  Also: the power-of-ten test uses a 1e-9 tolerance on log10(v1/v2) instead of exact float equality.

Empty predictions: a prediction that normalises to the empty string never matches (the released
containment check counts "the" as correct against anything, because "" is a substring of every string).
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Sequence

from nemo_qwenlong.rewards.extract import qa_phrase_tails
from nemo_qwenlong.rewards.numbers import parse_bool, parse_number

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = frozenset(string.punctuation)
FIRST_LINE_DATASETS = frozenset({"trec", "triviaqa", "samsum", "lsht"})  # LongBench scores their first line


def normalize_answer(s: str) -> str:
    """Lower-case, drop ASCII punctuation, drop the words a/an/the, fold white space (SQuAD/LongBench)."""
    s = "".join(ch for ch in s.lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", s).split())


def exact_match(pred: str | None, gold: str) -> bool:
    p = normalize_answer(pred or "")
    return bool(p) and p == normalize_answer(gold)


def sub_exact_match(pred: str | None, gold: str) -> bool:
    """Containment either way after normalisation (QwenLong-L1's QA rule reward), never for empty strings."""
    p, g = normalize_answer(pred or ""), normalize_answer(gold)
    return bool(p) and bool(g) and (p in g or g in p)


def token_f1(pred: str, gold: str) -> float:
    """LongBench token F1 of one (prediction, gold) pair on normalised tokens."""
    p_tokens, g_tokens = normalize_answer(pred).split(), normalize_answer(gold).split()
    same = sum((Counter(p_tokens) & Counter(g_tokens)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(p_tokens), same / len(g_tokens)
    return 2 * precision * recall / (precision + recall)


def qa_f1(pred: str | None, golds: Sequence[str], *, dataset: str | None = None) -> float:
    """LongBench `qa_f1_score`, max over gold answers (first line only for trec/triviaqa/samsum/lsht)."""
    pred = pred or ""
    if dataset in FIRST_LINE_DATASETS:
        pred = pred.lstrip("\n").split("\n")[0]
    return max((token_f1(pred, g) for g in golds), default=0.0)


def choice_match(pred_letter: str | None, gold_letter: str | None) -> bool:
    return bool(pred_letter) and bool(gold_letter) and pred_letter.strip().upper() == gold_letter.strip().upper()


# --- DocMath numeric match (spec §2.3) -------------------------------------------------------------

REL_TOL = 0.0015  # 0.15 % relative tolerance


def _within(pred: float, gold: float) -> bool:
    return abs(pred - gold) <= abs(gold) * REL_TOL


def _ceil_round(x: float, decimals: int) -> float:
    factor = 10**decimals
    return math.ceil(x * factor) / factor


def numbers_match(pred: float, gold: float, *, decimals: int = 2) -> bool:
    """QwenLong-L1/DocMath comparison on absolute values: power-of-ten slack, ×100/×1000/×100000
    scale slips, equal after ceil-rounding to `decimals`, or within 0.15 % of the gold."""
    v1, v2 = max(abs(gold), abs(pred)), min(abs(gold), abs(pred))
    if v1 != 0 and v2 != 0:
        ratio = math.log10(v1 / v2)
        if math.isclose(ratio, round(ratio), abs_tol=1e-9):
            return True
    for factor, bound in ((100, 50), (1000, 500), (100000, 50000)):
        if v2 <= v1 / bound and _within(v2 * factor, v1):
            return True
    if _ceil_round(v1, decimals) == _ceil_round(v2, decimals):
        return True
    return _within(pred, gold)


def docmath_match(pred: str | float | None, gold: str | float | bool, *, decimals: int = 2) -> bool:
    """Numeric (or boolean) answer match. Strings are parsed with `rewards.numbers`, never evaluated."""
    if pred is None:
        return False
    if isinstance(gold, str):
        gold_bool = parse_bool(gold)
        gold = gold_bool if gold_bool is not None else parse_number(gold)
        if gold is None:
            raise ValueError("docmath gold answer has no number or boolean in it")
    if isinstance(gold, bool):
        pred_bool = parse_bool(pred) if isinstance(pred, str) else (pred if isinstance(pred, bool) else None)
        return pred_bool is not None and pred_bool == gold
    value = parse_number(pred) if isinstance(pred, str) else (None if isinstance(pred, bool) else float(pred))
    return value is not None and numbers_match(value, float(gold), decimals=decimals)


def extract_math_answer(text: str | None) -> str | None:
    """The numeric answer text after the last 'the answer is' that is followed by a number."""
    for tail in qa_phrase_tails(text):
        candidate = tail.split("\n", 1)[0].strip()
        if parse_bool(candidate) is not None or parse_number(candidate) is not None:
            return candidate.rstrip(".").strip()
    return None


def docmath_eval_match(response: str | None, gold_answer: str | float, *, decimals: int = 2) -> bool:
    """The evaluation protocol: both sides as answer sentences, extracted, then `docmath_match`."""
    pred = extract_math_answer(response)
    gold = extract_math_answer(f"Therefore, the answer is {gold_answer}.")
    if pred is None or gold is None:
        return False
    return docmath_match(pred, gold, decimals=decimals)
