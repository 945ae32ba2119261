"""`eval score`: score a responses file into `scores.jsonl` (resumable), then write the report.

Rows are scored in chunks: rule metrics first, then both judges over the chunk concurrently (the
released protocol for every row, ours for rows with an extracted answer; with the judge path of
`docmath_official`, DocMath-Eval's answer extraction for DocMath rows too), then the chunk's lines are
appended. A re-run skips rows whose score line is complete. Judge verdicts are cached in
`judge_cache.sqlite` beside the scores, so a re-run after a kill asks nothing twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nemo_qwenlong.eval import released
from nemo_qwenlong.eval.metrics import (Row, RuleScores, Verdict, answer_region, combine, rule_scores,
                                        wants_docmath_extraction)
from nemo_qwenlong.eval.results import EvalInputError, ResultsFile, read_jsonl

SCORES_FILE = "scores.jsonl"
CHUNK = 64
DOCMATH_EXTRACTORS = ("rule", "judge")  # `docmath_official`'s answer extraction (config: evaluation.docmath_extractor)


def row_key(obj: dict[str, Any]) -> str:
    return f"{obj['benchmark']}/{obj['id']}/{obj.get('sample', 0)}"


def load_rows(path: Path, benchmarks: Collection[str] | None = None) -> list[Row]:
    """The responses file as `Row`s (only those of `benchmarks` when given); a bad row raises
    EvalInputError naming the file and line.

    A later line for the same benchmark/id/sample replaces an earlier one (a retried generation)."""
    rows: dict[str, Row] = {}
    for number, obj in read_jsonl(path, what="responses"):
        row = Row.from_json(obj, f"{path}, line {number}")
        row.extra["key"] = row_key(obj)
        rows[row.extra["key"]] = row
    if not rows:
        raise EvalInputError(f"{path}: no rows to score")
    if benchmarks is None:
        return list(rows.values())
    kept = [r for r in rows.values() if r.benchmark in benchmarks]
    if not kept:
        held = sorted({r.benchmark for r in rows.values()})
        raise EvalInputError(f"{path}: no rows of {', '.join(sorted(benchmarks))} to score; it holds "
                             f"{', '.join(held)}")
    return kept


@dataclass
class Judges:
    """The released-protocol judge and ours, over one OpenAI-compatible server; `extractor`: DocMath-Eval's
    answer extraction over the same server (the judge path of `docmath_official`), or None."""

    released: Any  # rewards.judge.JudgeClient
    strict: Any
    extractor: Any = None  # eval.docmath_extract.AnswerExtractor

    @classmethod
    def build(cls, cfg: Any, out_dir: Path, *, docmath_extractor: str) -> "Judges":  # cfg: JudgeConfig
        from nemo_qwenlong.rewards.judge import JudgeClient

        extractor = None
        if docmath_extractor == "judge":
            from nemo_qwenlong.eval.docmath_extract import AnswerExtractor

            extractor = AnswerExtractor(cfg)
        return cls(JudgeClient(cfg, run_dir=out_dir, protocol=released.judge_protocol()),
                   JudgeClient(cfg, run_dir=out_dir), extractor)

    def ask(self, rows: Sequence[Row], rules: Sequence[RuleScores]) -> tuple[list, list, list]:
        """(released verdicts, strict verdicts, DocMath extractions), one entry per row (None: not asked)."""
        from nemo_qwenlong.rewards.judge import JudgeRequest

        live = [i for i, r in enumerate(rows) if r.response is not None]
        rel_requests = [JudgeRequest(rows[i].question, rules[i].released_answer_1, rows[i].answers[0]) for i in live]
        strict_idx = [i for i in live if rules[i].strict_pred is not None]
        strict_requests = [JudgeRequest(rows[i].question, rules[i].strict_pred, rules[i].strict_gold) for i in strict_idx]

        extract_idx = [i for i, r in enumerate(rows) if self.extractor is not None and wants_docmath_extraction(r)]

        async def every():  # noqa: ANN202
            asked = [self.released.judge_async(rel_requests), self.strict.judge_async(strict_requests)]
            if extract_idx:
                from nemo_qwenlong.eval.docmath_extract import ExtractionRequest

                asked.append(self.extractor.extract_async(
                    [ExtractionRequest(rows[i].question, answer_region(rows[i].response or "")) for i in extract_idx]))
            return await asyncio.gather(*asked)

        rel_out, strict_out, *extract_out = asyncio.run(every())
        extractions: list[Any] = [None] * len(rows)
        for i, e in zip(extract_idx, extract_out[0] if extract_out else []):
            extractions[i] = e
        rel: list[Verdict | None] = [None] * len(rows)
        strict: list[Verdict | None] = [None] * len(rows)
        for i, o in zip(live, rel_out):
            rel[i] = Verdict(o.verdict, o.error, o.cached)
        for i, o in zip(strict_idx, strict_out):
            strict[i] = Verdict(o.verdict, o.error, o.cached)
        for i in live:  # asked of the released judge but not of ours (no extracted answer): our judge says no
            if strict[i] is None:
                strict[i] = Verdict(False, None)
        return rel, strict, extractions

    def close(self) -> None:
        self.released.close()
        self.strict.close()


def score_rows(rows: list[Row], out_dir: Path, *, judges: Judges | None,
               progress: Callable[[int, int], Callable[[int], None]] | None = None) -> list[dict[str, Any]]:
    """Score what is not in `out_dir/scores.jsonl` yet; returns the score rows of `rows` (old and new).
    Rows whose generation had failed are scored again (the generation may have been retried since)."""
    results = ResultsFile(out_dir / SCORES_FILE)
    done = {s["key"] for s in results.rows() if not (s.get("failure") or "").startswith("generation")}
    todo = [r for r in rows if r.extra["key"] not in done]
    tick = progress(len(todo), len(rows) - len(todo)) if progress else None
    for start in range(0, len(todo), CHUNK):
        chunk = todo[start:start + CHUNK]
        rules = [rule_scores(r) for r in chunk]
        if judges is None:
            verdicts: tuple[list, list, list] = ([None] * len(chunk), [None] * len(chunk), [None] * len(chunk))
        else:
            verdicts = judges.ask(chunk, rules)
        results.append(combine(r, s, rv, sv, judged=judges is not None, docmath_extraction=ex)
                       for r, s, rv, sv, ex in zip(chunk, rules, *verdicts))
        if tick is not None:
            tick(len(chunk))
    latest = {s["key"]: s for s in results.rows()}  # a later line for a key replaces an earlier one
    return [latest[r.extra["key"]] for r in rows]
