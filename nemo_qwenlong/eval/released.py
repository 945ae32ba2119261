"""The released QwenLong-L1 evaluation (Tongyi-Zhiwen/QwenLong-L1 @ 38d0806, `eval/<bench>.py` and
`eval/<bench>_verify.py`; spec §8), reproduced behaviour for behaviour — quirks included — without
evaluating model text. This is the protocol behind the paper's Table 4; `metrics.strict` is the
corrected scorer reported beside it.

Per item:
- answer region: the text after the last `</think>`, stripped; the whole (stripped) response when
  there is no `</think>` **or the region is empty**;
- QA extractor: remove `*`; the text after the last **case-sensitive** `the answer is`, without the
  DeepSeek special tokens, stripped of white space and periods; None without the phrase
  ("The answer is X" scores 0);
- QA rule: sub-EM against `answers[0]` after SQuAD normalisation, containment either way, **empty
  strings included** (a prediction "the" normalises to "" and matches anything); an empty or missing
  prediction scores 0;
- DocMath extractor: remove `*()`, the **first** case-insensitive `the answer is` followed by an
  optional symbol prefix and `-?[0-9.,]+`, commas dropped, trailing periods stripped; the gold is the
  same extractor on "Therefore, the answer is {ground_truth}.";
- DocMath rule: `docmath_eval.released_get_acc`;
- judge (`*_verify.py`): called for every item; the system prompt and three-line user message below;
  Answer 1 is the extracted prediction as is ("None" when extraction failed); for DocMath, when the
  numeric extraction failed, the answer region minus "Therefore, the answer is" (stripped, trailing
  periods dropped); Answer 2 is `answers[0]` (DocMath: `str(ground_truth)`); `temperature 0`,
  `seed 42`, `n 1`; verdict = "YES" anywhere in the reply; 3 tries, retrying only on HTTP 429; any
  other error scores 0; three 429s (or a reply without content) lose the item;
- final = max(judge, rule).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from nemo_qwenlong.eval import docmath_eval
from nemo_qwenlong.eval.docmath_eval import ReleasedScoringError, released_get_acc
from nemo_qwenlong.rewards.judge import JudgeProtocol
from nemo_qwenlong.rewards.rule import normalize_answer

THINK_END = "</think>"
_QA_PHRASE = "the answer is"
_DEEPSEEK_TOKENS = ("<｜Assistant｜>", "<｜end▁of▁sentence｜>")
_DOCMATH_JUDGE_STRIP = "Therefore, the answer is"

JUDGE_SYSTEM_PROMPT = """You are an expert in verifying if two answers are the same.
Your input is a problem and two answers, Answer 1 and Answer 2. You need to check if they are equivalent.
Your task is to determine if two answers are equivalent, without attempting to solve the original problem.
Compare the answers to verify they represent identical values or meaning, even when written in different forms or notations.

Your output must follow the following format:
1) Provide an explanation for why the answers are equivalent or not.
2) Then provide your final answer in the form of: [[YES]] or [[NO]]
"""
JUDGE_USER_TEMPLATE = "\nProblem: {problem}\nAnswer 1: {answer_1}\nAnswer 2: {answer_2}\n"
JUDGE_SEED = 42
JUDGE_TRIES = 3
OPENAI_SDK_RETRIES = 2  # openai.OpenAI's default max_retries, which the released clients kept


def answer_region(response: str) -> str:
    """`extract_solution(...)[0] or response`: post-think text, else the whole response."""
    response = response.strip()
    if THINK_END not in response:
        return response
    return response.split(THINK_END)[-1].strip() or response


def extract_qa(text: str) -> str | None:
    text = text.replace("*", "")
    if _QA_PHRASE not in text:
        return None
    answer = text.rsplit(_QA_PHRASE, 1)[-1].strip()
    for token in _DEEPSEEK_TOKENS:
        answer = answer.replace(token, "")
    return answer.strip().strip(".").strip()


extract_docmath = docmath_eval.extract_answer


def sub_em(pred: str, gold: str) -> float:
    """Containment either way after normalisation; "" is inside every string (the released quirk)."""
    p, g = normalize_answer(pred), normalize_answer(gold)
    return float(g in p or p in g)


def docmath_gold(ground_truth: str) -> str | None:
    return extract_docmath(f"Therefore, the answer is {ground_truth}.")


@dataclass(frozen=True)
class ReleasedRule:
    pred: str | None  # the released `item["pred"]`
    score: float | None  # None: the released script raised on this item (dropped from its mean)
    error: str | None = None


def rule(response: str, answers: list[str], *, math: bool) -> ReleasedRule:
    """The released per-item rule part (`judge_sub_em`, or DocMath's `judge`)."""
    region = answer_region(response)
    if math:
        pred = extract_docmath(region)
        if not pred:
            return ReleasedRule(pred, 0.0)
        try:
            return ReleasedRule(pred, float(released_get_acc(pred, docmath_gold(answers[0]))))
        except ReleasedScoringError as err:
            return ReleasedRule(pred, None, str(err))
    pred = extract_qa(region)
    return ReleasedRule(pred, sub_em(pred, answers[0]) if pred else 0.0)


def judge_answer_1(response: str, pred: str | None, *, math: bool) -> str | None:
    """Answer 1 of the released judge prompt (None is formatted as "None")."""
    if not math or pred:
        return pred
    region = answer_region(response)
    return region.replace(_DOCMATH_JUDGE_STRIP, "").strip().rstrip(".").strip() if region else None


def judge_messages(problem: str, answer_1: str | None, answer_2: str) -> list[dict[str, str]]:
    user = JUDGE_USER_TEMPLATE.format(problem=problem, answer_1=answer_1, answer_2=answer_2)
    return [{"role": "system", "content": JUDGE_SYSTEM_PROMPT}, {"role": "user", "content": user}]


def parse_verdict(reply: str | None) -> bool | None:
    """`"YES" in reply` (so "NOT YES" and a quoted "[[YES]]" count); a reply without content raised
    in the released script (None: the item is lost)."""
    return None if reply is None else "YES" in reply


def judge_protocol() -> JudgeProtocol:
    """The released `*_verify.py` call: temperature 0, seed 42, no max_tokens, 3 tries retried when the
    error's text holds "429", any other error scores 0, three such errors lose the item; each try is an
    `openai.OpenAI` call with the SDK's default 2 retries of its own (429/5xx/connection/timeouts)."""
    return JudgeProtocol(version="qwenlong-l1-released-verify", prepare=lambda p, cfg: "None" if p is None else p,
                         messages=judge_messages, parse=parse_verdict, retryable=lambda exc: "429" in str(exc),
                         tries=JUDGE_TRIES, temperature=0.0, seed=JUDGE_SEED, send_max_tokens=False,
                         error_verdict=False, any_error=True, sdk_retries=OPENAI_SDK_RETRIES)


# --- the released training reward (verl/utils/reward_score/{docqa,docmath,long}.py), for `reward.protocol: qwenlong`

_CHOICE_PAREN = re.compile(r"The correct answer is \(([A-D])\)")
_CHOICE_BARE = re.compile(r"The correct answer is ([A-D])")


def extract_choice(text: str) -> str | None:
    """long.py: the first case-sensitive "The correct answer is (X)", else "… is X", X in A–D."""
    text = text.replace("*", "")
    match = _CHOICE_PAREN.search(text) or _CHOICE_BARE.search(text)
    return match.group(1) if match else None


def training_rule(kind: str, region: str | None, ground_truth: str) -> tuple[float, str | None, str]:
    """(0/1 rule reward, extracted prediction, extracted gold — the judge's Answer 2) of the released
    training reward for one answer region (the text after the last `</think>`; None or empty scores 0).
    The gold goes through the same extractor, as released. A multiple-choice gold without the phrase
    scores 0 (released: an exception caught as 0); a QA or DocMath gold the extractor cannot read is
    used as it is (the released code would stop the run on it). A DocMath input the released scorer
    raises on scores 0."""
    if kind == "choice":
        gold = extract_choice(ground_truth)
        pred = extract_choice(region) if region else None
        return float(bool(pred) and gold is not None and pred.lower() == gold.lower()), pred, gold or ground_truth
    if kind == "math":
        gold = docmath_eval.extract_answer(ground_truth, strip_parens=False) or ground_truth.strip()
        pred = docmath_eval.extract_answer(region, strip_parens=False) if region else None
        if not pred:
            return 0.0, pred, gold
        try:
            return float(released_get_acc(pred, gold, training=True)), pred, gold
        except ReleasedScoringError:
            return 0.0, pred, gold
    gold = extract_qa(ground_truth)
    gold = ground_truth.strip() if gold is None else gold
    pred = extract_qa(region) if region else None
    return (sub_em(pred, gold) if pred else 0.0), pred, gold


def training_judge_protocol() -> JudgeProtocol:
    """The released training judge call: temperature 0, no seed, 5 tries on 429, "YES" in reply."""
    import dataclasses

    return dataclasses.replace(judge_protocol(), version="qwenlong-l1-released-train", tries=5, seed=None)
