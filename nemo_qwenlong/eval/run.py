"""Score a responses file and write the report: what `eval score`, `eval` and the main job's eval stage share."""

from __future__ import annotations

from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

from nemo_qwenlong.eval.report import write_report
from nemo_qwenlong.eval.results import EvalInputError
from nemo_qwenlong.eval.score import DOCMATH_EXTRACTORS, Judges, load_rows, score_rows


def score_and_report(responses: Path, out_dir: Path, *, judge: Any, model_name: str, docmath_extractor: str,
                     benchmarks: Collection[str] | None = None,
                     progress: Callable[..., Callable[..., None]] | None = None) -> list[dict[str, Any]]:
    """`judge`: a config.pipeline.JudgeConfig, or None for rule scores only; `docmath_extractor`: "rule" or
    "judge" (evaluation.docmath_extractor); `benchmarks`: score only these benchmarks' rows (default: every
    row). Returns the per-benchmark summary."""
    if docmath_extractor not in DOCMATH_EXTRACTORS:
        raise EvalInputError(f"docmath_extractor {docmath_extractor!r}: accepted are {', '.join(DOCMATH_EXTRACTORS)}")
    if docmath_extractor == "judge" and judge is None:
        raise EvalInputError("docmath_extractor 'judge' asks the judge endpoint, and no judge is configured "
                             "(give --judge-url, or use --docmath-extractor rule)")
    rows = load_rows(responses, benchmarks)
    out_dir.mkdir(parents=True, exist_ok=True)
    judges = Judges.build(judge, out_dir, docmath_extractor=docmath_extractor) if judge is not None else None
    try:
        scores = score_rows(rows, out_dir, judges=judges, progress=progress)
    finally:
        if judges is not None:
            judges.close()
    return write_report(scores, out_dir, model=model_name)
