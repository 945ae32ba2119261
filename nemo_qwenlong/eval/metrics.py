"""Per-item evaluation metrics. Every row gets every metric that applies to its benchmark:

| metric | what | applies to |
|---|---|---|
| `qwenlong` | the released QwenLong-L1 eval score, max(judge, rule) — the number beside Table 4 (`eval.released`) | all |
| `strict` | our corrected scorer: `rewards` behaviour (last answer phrase, any case, no empty matches, hardened judge prompt, last `[[YES]]`/`[[NO]]`), max(judge, rule) | all |
| `judge` | the released judge's verdict alone (the "judge-only" column) | all, when a judge is configured |
| `f1` | LongBench `qa_f1_score` on the answer region as LongBench scores raw output (first line only for its first-line datasets), max over the gold answers | QA sets |
| `f1_answer` | the same F1 on the extracted answer (text after the last "the answer is", any case), the region when there is none | QA sets |
| `em` | normalised exact match of the extracted answer, any gold answer | QA sets |
| `docmath_official` | DocMath-Eval's CoT verdict: the final answer as written (rule path: the phrase after the last "the answer is" to the end of its sentence; judge path: the judge endpoint asked with DocMath-Eval's extraction prompt), 0 if it says "none", else its `get_acc` against the numeric gold | DocMath |

"Answer region": the text after the last `</think>`, the whole response without one. A row may carry
`prediction` (an answer another pipeline already extracted); then `f1`, `f1_answer`, `em` and
`docmath_official` score it as it is. With no judge configured, `qwenlong` and `strict` are their
rule parts alone (the report says so).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from typing import Any

from nemo_qwenlong.eval import released
from nemo_qwenlong.eval.docmath_eval import final_answer_phrase, official_cot_acc
from nemo_qwenlong.eval.results import EvalInputError
from nemo_qwenlong.rewards.extract import answer_region as strict_region
from nemo_qwenlong.rewards.extract import extract_qa_answer
from nemo_qwenlong.rewards.hybrid import gold_answer, rule_score
from nemo_qwenlong.rewards.rule import exact_match, qa_f1

QA_BENCHMARKS = ("frames", "2wikimqa", "hotpotqa", "musique", "narrativeqa", "qasper")
BENCHMARKS = ("docmath", *QA_BENCHMARKS)
EVAL_DOCMATH_DECIMALS = 2  # the released eval rounds to 2 decimals (training: 3)


def is_math(benchmark: str) -> bool:
    return benchmark.startswith("docmath")


def metric_names(benchmark: str, *, judged: bool) -> list[str]:
    names = ["qwenlong", "strict"] + (["judge"] if judged else [])
    return names + (["docmath_official"] if is_math(benchmark) else ["f1", "f1_answer", "em"])


@dataclass
class Row:
    """One response to score (the `eval score` input layout)."""

    id: str
    benchmark: str
    response: str | None  # None: the generation failed
    answers: list[str]
    question: str = ""
    prediction: str | None = None
    error: str | None = None  # why the generation failed
    extra: dict[str, Any] = field(default_factory=dict)  # carried to the output (input_tokens, truncated, ...)

    @classmethod
    def from_json(cls, obj: dict[str, Any], where: str) -> "Row":
        missing = [k for k in ("id", "benchmark", "answers") if k not in obj]
        if missing:
            raise EvalInputError(f"{where}: missing field(s) {', '.join(missing)} (a row needs id, benchmark, "
                             "response, answers; question for the judge)")
        answers = obj["answers"]
        if not isinstance(answers, list) or not answers or not all(isinstance(a, (str, int, float)) for a in answers):
            raise EvalInputError(f"{where}: answers must be a non-empty list of strings, got {answers!r}")
        response = obj.get("response")
        if response is not None and not isinstance(response, str):
            raise EvalInputError(f"{where}: response must be a string or null, got {type(response).__name__}")
        known = {"id", "benchmark", "response", "answers", "question", "prediction", "error"}
        return cls(id=str(obj["id"]), benchmark=str(obj["benchmark"]), response=response,
                   answers=[str(a) for a in answers], question=str(obj.get("question") or ""),
                   prediction=obj.get("prediction"), error=obj.get("error"),
                   extra={k: v for k, v in obj.items() if k not in known})


@dataclass
class RuleScores:
    """Everything that needs no judge, plus what the two judges would be asked."""

    released: released.ReleasedRule
    strict_pred: str | None
    strict_rule: float
    values: dict[str, float]  # f1 / f1_answer / em / docmath_official
    released_answer_1: str | None
    strict_gold: str
    docmath_answer: str | None = None  # what docmath_official scored (rule path)


def rule_scores(row: Row) -> RuleScores:
    response = row.response or ""
    math = is_math(row.benchmark)
    rel = released.rule(response, row.answers, math=math)
    kind = "math" if math else "qa"
    gold = gold_answer(kind, row.answers[0])
    strict_rule, strict_pred = rule_score(kind, strict_region(response, require_think=False), gold,
                                          docmath_decimals=EVAL_DOCMATH_DECIMALS)
    region = answer_region(response)
    values: dict[str, float] = {}
    docmath_answer = None
    if math:
        phrase = final_answer_phrase(region)
        docmath_answer = row.prediction if row.prediction is not None else (region if phrase is None else phrase)
        values["docmath_official"] = float(official_cot_acc(docmath_answer, _numeric_gold(row.answers[0])))
    else:
        scored = row.prediction if row.prediction is not None else region
        answer = row.prediction if row.prediction is not None else (extract_qa_answer(region) or region)
        values["f1"] = qa_f1(scored, row.answers, dataset=row.benchmark)
        values["f1_answer"] = qa_f1(answer, row.answers, dataset=row.benchmark)
        values["em"] = float(any(exact_match(answer, g) for g in row.answers))
    return RuleScores(released=rel, strict_pred=strict_pred, strict_rule=strict_rule, values=values,
                      released_answer_1=released.judge_answer_1(response, rel.pred, math=math), strict_gold=gold,
                      docmath_answer=docmath_answer)


def answer_region(response: str) -> str:
    """The text after the last `</think>`, the whole response without one."""
    return response.rsplit(released.THINK_END, 1)[-1] if released.THINK_END in response else response


def wants_docmath_extraction(row: Row) -> bool:
    """A row whose `docmath_official` the judge path extracts (DocMath, generated, no given prediction)."""
    return is_math(row.benchmark) and row.response is not None and row.prediction is None


def _numeric_gold(text: str) -> Any:
    """DocMath's ground truth back from its `str()` form (int, float or bool); the text if it is neither."""
    try:
        value = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError):
        return text
    return value if isinstance(value, (int, float, bool)) else text


@dataclass
class Verdict:
    value: bool | None  # None: no verdict
    error: str | None = None
    cached: bool = False


def combine(row: Row, rules: RuleScores, released_judge: Verdict | None, strict_judge: Verdict | None,
            *, judged: bool, docmath_extraction: Any = None) -> dict[str, Any]:
    """The output row of `scores.jsonl`; `judged`: a judge is configured (its verdicts may still be missing);
    `docmath_extraction`: the judge path's `eval.docmath_extract.Extraction` (None: the rule path)."""
    if row.response is None:
        scores = {name: 0.0 for name in metric_names(row.benchmark, judged=judged)}
        return _out(row, scores, failure=f"generation: {row.error or 'failed'}", dropped=True, rules=rules,
                    released_judge=released_judge, strict_judge=strict_judge)
    rel = rules.released
    released_verdict = released_judge.value if released_judge is not None else None
    # the released scripts also skipped an empty output (`if output == '': continue`)
    dropped = rel.score is None or (judged and released_verdict is None) or row.response == ""
    judge_value = float(bool(released_verdict))
    strict_verdict = strict_judge.value if strict_judge is not None else None
    scores = {"qwenlong": max(rel.score or 0.0, judge_value), "strict": max(rules.strict_rule, float(bool(strict_verdict)))}
    if judged:
        scores["judge"] = judge_value
    scores |= rules.values
    failures = []
    for name, verdict in (("released judge", released_judge), ("strict judge", strict_judge)):
        if verdict is not None and verdict.error:
            failures.append(f"{name}: {verdict.error}")
    if rel.error:
        failures.append(f"released scorer: {rel.error}")
    docmath = None
    if "docmath_official" in scores:
        scores["docmath_official"], docmath = _docmath_official(row, rules, docmath_extraction)
        if docmath.get("extractor_error"):
            failures.append(f"docmath extractor: {docmath['extractor_error']}")
    out = _out(row, scores, failure="; ".join(failures) or None, dropped=dropped, rules=rules,
               released_judge=released_judge, strict_judge=strict_judge)
    return out | ({"docmath_official": docmath} if docmath is not None else {})


def _docmath_official(row: Row, rules: RuleScores, extraction: Any) -> tuple[float, dict[str, Any]]:
    """The judge path's verdict when its extraction came back, else the rule path's (an extractor failure
    is named, so the report counts it)."""
    rule = rules.values["docmath_official"]
    detail: dict[str, Any] = {"extractor": "rule", "answer": rules.docmath_answer}
    if extraction is None:
        return rule, detail
    if extraction.error is not None:
        return rule, detail | {"extractor_error": extraction.error}
    score = float(official_cot_acc(extraction.text, _numeric_gold(row.answers[0])))
    return score, {"extractor": "judge", "answer": extraction.text, "replies": extraction.replies,
                   "rule_answer": rules.docmath_answer, "rule_score": rule}


def _verdict_json(v: Verdict | None) -> dict[str, Any] | None:
    return None if v is None else {"verdict": v.value, "error": v.error, "cached": v.cached}


def _out(row: Row, scores: dict[str, float], *, failure: str | None, dropped: bool, rules: RuleScores,
         released_judge: Verdict | None, strict_judge: Verdict | None) -> dict[str, Any]:
    return {
        "id": row.id, "benchmark": row.benchmark, "scores": scores, "failure": failure,
        "released_dropped": dropped,
        "qwenlong": {"pred": rules.released.pred, "rule": rules.released.score, "judge": _verdict_json(released_judge)},
        "strict": {"pred": rules.strict_pred, "rule": rules.strict_rule, "judge": _verdict_json(strict_judge)},
        "response_chars": len(row.response or ""), **row.extra,
    }
