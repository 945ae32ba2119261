"""DocMath-Eval's numeric answer check, behaviour for behaviour, and QwenLong-L1's copy of it.

Sources read: yale-nlp/DocMath-Eval @ 5c9b9b44bb44ed4094dce03abaf2840b4c20c7c8 (`evaluation.py`
`evaluate_cot_pred_file`, `utils/evaluation_utils.py` `extract_cot_answers`/`normalize`/`get_acc`/
`compare_two_numbers`, `utils/openai_utils.py`); QwenLong-L1's `eval/docmath.py` carries a copy of
`normalize`/`get_acc` with one change, 2-decimal instead of 3-decimal ceil rounding.

DocMath-Eval's chain-of-thought protocol: a language model extracts the final answer from the output
(`eval.docmath_extract`), an extraction holding "none" (any case) scores 0, anything else goes through
`get_acc` (normalise the text, compare with the numeric ground truth, every exception 0).
- `official_cot_acc(extracted, gold)` — that protocol's verdict on an extracted answer.
- `final_answer_phrase(text)` — the rule-based extractor: the phrase after the last "the answer is",
  to the end of its sentence, as the model wrote it (what a faithful extractor returns).
- `official_get_acc(prediction, gold)` — DocMath-Eval's `get_acc` (3-decimal rounding).
- `released_get_acc(prediction, gold)` (QwenLong-L1's eval) — both sides are normalised strings, 2
  decimals; nothing is caught, so an exception means the released script lost the item
  (`ReleasedScoringError`).

Both `normalize`s end in `eval(text)`. Here `safe_expr.evaluate` stands in for it (see its docstring for
the few places where it can differ); a failed evaluation gives 0, as `except Exception: prediction = 0`
does. On the text the QwenLong-L1 extractor can produce (`-?[0-9.]+` after its prefix symbols) the two
are identical.
"""

from __future__ import annotations

import math
import re
from typing import Any

from nemo_qwenlong.eval.safe_expr import UnsafeExpression, evaluate

_DROPPED_WORDS = ("£", "€", "¥", "million", "billion", "thousand", "US", "USD", "RMB")  # in this order
_DROPPED_SYMBOLS = ("`", "%", "$", "°")
_NUM = r"(?:[\d,]*\.*\d+)"
_UNIT_AFTER_SPACED = re.compile(rf"([-+]?{_NUM}) [^0-9 ]+$")
_UNIT_BEFORE_SPACED = re.compile(rf"[^0-9 ]+ ([-+]?{_NUM})$")
_UNIT_AFTER = re.compile(rf"([-+]?{_NUM})[^\d]{{1,2}}$")
_UNIT_BEFORE = re.compile(rf"[^-+\d]{{1,2}}({_NUM})$")
_GROUPED_NUMBER = re.compile(r"^[-+]?(\d{1,3}(,\d{3})*|(\d+))(\.\d+)?$")
_OPTION = re.compile(r"\([a-d]\)")
_ANSWER = re.compile(r"the answer is (\=?\≈?\`?\%?\$?\°?\£?\€?\¥?-?[0-9\.,]+)", re.IGNORECASE)
_POWER_OF_TEN = re.compile(r"10\^(-?\d+)")
TOLERANCE = 0.0015  # relative
DECIMALS = 2  # ceil-rounding digits of QwenLong-L1's eval
OFFICIAL_DECIMALS = 3  # DocMath-Eval's `round_up_to_decimal(v, 3)`
_ANSWER_IS = re.compile(r"the answer is", re.IGNORECASE)
_SENTENCE_END = re.compile(r"[.!?](?=\s|$)|\n")  # "1.5" and "$1.5 million." keep their decimal point
TRAINING_DECIMALS = 3  # QwenLong-L1's training reward


class ReleasedScoringError(RuntimeError):
    """An input on which the released QwenLong-L1 scorer raises (the item drops out of its mean)."""


def _clean(text: str) -> str:
    """Stage-1 string clean-up: currency/scale words, `=`/`≈` tails, symbols, booleans, units, `10^k`."""
    text = text.strip().rstrip(".")
    for word in _DROPPED_WORDS:
        text = text.replace(word, "")
    for sep in ("=", "≈"):
        if sep in text:
            text = text.split(sep)[-1].strip()
    for symbol in _DROPPED_SYMBOLS:
        text = text.replace(symbol, "")
    if text in ("true", "yes", "false", "no"):
        text = "True" if text in ("true", "yes") else "False"
    if "True" in text or "False" in text:
        text = "True" if "True" in text else "False"
    if "approximately" in text:
        text = text.replace("approximately", "").strip()
    if " or " in text:
        text = text.split(" or ")[0]
    for pattern in (_UNIT_AFTER_SPACED, _UNIT_BEFORE_SPACED, _UNIT_AFTER, _UNIT_BEFORE):
        if pattern.match(text):
            text = pattern.search(text).group(1)
    if "10^" in text:
        text = _POWER_OF_TEN.sub(r"math.pow(10, \1)", text)
    text = text.replace(" x ", "*") if " x " in text else text
    text = text.replace(" × ", "*") if " × " in text else text
    if _GROUPED_NUMBER.match(text):
        text = text.replace(",", "")
    if any(opt in text for opt in ("(a)", "(b)", "(c)", "(d)")):
        text = '"' + _OPTION.search(text).group(0) + '"'
    return text or "0"


def normalize(text: str) -> Any:
    """DocMath's `normalize`: the answer text as a number/bool/str/list (0 when it does not evaluate)."""
    try:
        value = evaluate(_clean(text))
    except UnsafeExpression:
        value = 0
    if isinstance(value, (set, tuple)):
        value = list(value)
        if isinstance(value[0], complex):  # IndexError on an empty tuple, as released
            value = [v.real for v in value]
    elif isinstance(value, complex):
        value = value.real
    return value


def _strip_marks(text: str) -> str:
    return text.replace("*", "").replace("(", "").replace(")", "")


def extract_answer(text: str, *, strip_parens: bool = True) -> str | None:
    """The number after the **first** "the answer is" (any case; optional symbol prefix, `-?[0-9.,]+`),
    commas dropped, trailing periods stripped, after removing `*`, `(` and `)` (the released training
    reward keeps the parentheses: `strip_parens=False`); None without one."""
    match = _ANSWER.search(_strip_marks(text) if strip_parens else text.replace("*", ""))
    return match.group(1).replace(",", "").rstrip(".") if match else None


def final_answer_phrase(text: str) -> str | None:
    """The final answer as the model wrote it: after the **last** "the answer is" (any case), leading
    white space and colons dropped, up to the end of its sentence (".", "!" or "?" before white space or
    the end, or a line break); markdown `*` removed. None without an "the answer is"."""
    starts = [m.end() for m in _ANSWER_IS.finditer(text)]
    if not starts:
        return None
    rest = text[starts[-1]:].replace("*", "").lstrip(" \t\n:")
    end = _SENTENCE_END.search(rest)
    return (rest[: end.start()] if end else rest).strip()


def is_none_answer(extracted: str) -> bool:
    """DocMath-Eval's `"none" in pred.lower()`: such an extraction scores 0 (and counts as not executed)."""
    return "none" in extracted.lower()


def official_cot_acc(extracted: str, gold: Any) -> int:
    """DocMath-Eval's CoT verdict on an extracted answer: 0 when it says "none", else `get_acc` against
    `float(ground_truth)` (a gold that is no number scores 0 here; DocMath-Eval would stop)."""
    try:
        gold = float(gold)
    except (TypeError, ValueError):
        return 0
    return 0 if is_none_answer(extracted) else official_get_acc(extracted, gold)


def _within(pred: float, gold: float) -> bool:
    eps = abs(gold) * TOLERANCE
    return gold - eps <= pred <= gold + eps


def _ceil_round(x: float, decimals: int) -> float:
    factor = 10**decimals
    return math.ceil(x * factor) / factor


def compare_two_numbers(p: Any, gold: Any, *, training: bool = False, decimals: int = DECIMALS) -> bool:
    """Numeric match: exact power-of-ten ratio, ×100/×1000/×100000 slips, equal ceil-rounded to `decimals`
    (QwenLong-L1's eval: 2, DocMath-Eval: 3), or within 0.15 % (bools count as numbers here, as in
    Python). `training`: the released training reward's variant (log10 v1 − log10 v2, three decimals,
    overflow scores False)."""
    if not isinstance(p, (int, float)):
        if isinstance(p, (list, bool, str, tuple, complex, dict)):
            return False
        raise ValueError(p)
    if not training:
        return _compare(p, gold, decimals=decimals, log_ratio=lambda a, b: math.log10(a / b))
    try:
        return _compare(p, gold, decimals=TRAINING_DECIMALS, log_ratio=lambda a, b: math.log10(a) - math.log10(b))
    except OverflowError:
        return False


def _compare(p: Any, gold: Any, *, decimals: int, log_ratio: Any) -> bool:
    v1, v2 = max(abs(gold), abs(p)), min(abs(gold), abs(p))
    if v1 != 0 and v2 != 0 and int(log_ratio(v1, v2)) == log_ratio(v1, v2):
        return True
    if v2 <= v1 / 50 and _within(v2 * 100, v1):
        return True
    if v2 <= v1 / 500 and _within(v2 * 1000, v1):
        return True
    if v2 <= v1 / 50000 and _within(v2 * 100000, v1):
        return True
    if _ceil_round(v1, decimals) == _ceil_round(v2, decimals):
        return True
    return _within(p, gold)


def _acc(prediction: Any, gold: Any, *, training: bool = False, decimals: int = DECIMALS) -> int:
    kind = type(gold).__name__
    if kind not in ("int", "float", "float64", "bool"):
        raise AssertionError(f"gold answer is a {kind}, not a number or bool")
    if not isinstance(prediction, (str, int, float, bool, list)):
        return 0
    if kind == "bool":
        return int(prediction == gold)
    return int(compare_two_numbers(prediction, gold, training=training, decimals=decimals))


def official_get_acc(prediction: str, gold: Any) -> int:
    """DocMath-Eval's `get_acc(prediction, gt)` (cot=True): 1/0, and 0 on any exception."""
    try:
        return _acc(normalize(prediction), gold, decimals=OFFICIAL_DECIMALS)
    except Exception:  # noqa: BLE001 - the official scorer scores every failure 0
        return 0


def released_get_acc(prediction: str, gold: str | None, *, training: bool = False) -> int:
    """QwenLong-L1's `get_acc(pred, answer)` (eval; `training`: the training reward's copy): both
    extracted strings normalised, nothing caught."""
    if gold is None:
        raise ReleasedScoringError("the gold answer has no number the released extractor finds")
    try:
        return _acc(normalize(prediction), normalize(gold), training=training)
    except Exception as exc:  # noqa: BLE001
        raise ReleasedScoringError(f"{type(exc).__name__}: {exc}") from exc
