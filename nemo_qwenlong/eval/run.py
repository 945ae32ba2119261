"""Score a responses file and write the report: what `eval score`, `eval` and the main job's eval stage share."""

from __future__ import annotations

from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

from nemo_qwenlong.eval.report import write_report
from nemo_qwenlong.eval.score import Judges, load_rows, score_rows


def score_and_report(responses: Path, out_dir: Path, *, judge: Any, model_name: str,
                     benchmarks: Collection[str] | None = None,
                     progress: Callable[..., Callable[..., None]] | None = None) -> list[dict[str, Any]]:
    """`judge`: a config.pipeline.JudgeConfig, or None for rule scores only; `benchmarks`: score only
    these benchmarks' rows (default: every row). Returns the per-benchmark summary."""
    rows = load_rows(responses, benchmarks)
    out_dir.mkdir(parents=True, exist_ok=True)
    judges = Judges.build(judge, out_dir) if judge is not None else None
    try:
        scores = score_rows(rows, out_dir, judges=judges, progress=progress)
    finally:
        if judges is not None:
            judges.close()
    return write_report(scores, out_dir, model=model_name)
