"""`eval score`: score a responses file into `scores.jsonl` (resumable), then write the report.

Rows are scored in chunks: rule metrics first, then both judges over the chunk concurrently (the
released protocol for every row, ours for rows with an extracted answer), then the chunk's lines are
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
from nemo_qwenlong.eval.metrics import Row, RuleScores, Verdict, combine, rule_scores
from nemo_qwenlong.eval.results import EvalInputError, ResultsFile, read_jsonl

SCORES_FILE = "scores.jsonl"
CHUNK = 64


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
    """The released-protocol judge and ours, over one OpenAI-compatible server."""

    released: Any  # rewards.judge.JudgeClient
    strict: Any

    @classmethod
    def build(cls, cfg: Any, out_dir: Path) -> "Judges":  # cfg: config.pipeline.JudgeConfig
        from nemo_qwenlong.rewards.judge import JudgeClient

        return cls(JudgeClient(cfg, run_dir=out_dir, protocol=released.judge_protocol()),
                   JudgeClient(cfg, run_dir=out_dir))

    def ask(self, rows: Sequence[Row], rules: Sequence[RuleScores]) -> tuple[list[Verdict | None], list[Verdict | None]]:
        from nemo_qwenlong.rewards.judge import JudgeRequest

        live = [i for i, r in enumerate(rows) if r.response is not None]
        rel_requests = [JudgeRequest(rows[i].question, rules[i].released_answer_1, rows[i].answers[0]) for i in live]
        strict_idx = [i for i in live if rules[i].strict_pred is not None]
        strict_requests = [JudgeRequest(rows[i].question, rules[i].strict_pred, rules[i].strict_gold) for i in strict_idx]

        async def both():  # noqa: ANN202
            return await asyncio.gather(self.released.judge_async(rel_requests), self.strict.judge_async(strict_requests))

        rel_out, strict_out = asyncio.run(both())
        rel: list[Verdict | None] = [None] * len(rows)
        strict: list[Verdict | None] = [None] * len(rows)
        for i, o in zip(live, rel_out):
            rel[i] = Verdict(o.verdict, o.error, o.cached)
        for i, o in zip(strict_idx, strict_out):
            strict[i] = Verdict(o.verdict, o.error, o.cached)
        for i in live:  # asked of the released judge but not of ours (no extracted answer): our judge says no
            if strict[i] is None:
                strict[i] = Verdict(False, None)
        return rel, strict

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
            verdicts: tuple[list, list] = ([None] * len(chunk), [None] * len(chunk))
        else:
            verdicts = judges.ask(chunk, rules)
        results.append(combine(r, s, rv, sv, judged=judges is not None) for r, s, rv, sv in zip(chunk, rules, *verdicts))
        if tick is not None:
            tick(len(chunk))
    latest = {s["key"]: s for s in results.rows()}  # a later line for a key replaces an earlier one
    return [latest[r.extra["key"]] for r in rows]
