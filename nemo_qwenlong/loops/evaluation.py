"""The main job's eval stage: `eval generate` with the run's own engine, then `eval score` (docs/eval.md).

Items are the held-out set (each `DocQAItem` as an eval item of benchmark `heldout-<band>` for the tiny
task, else its `data_source`) or, with `evaluation.benchmarks`, the benchmarks' items from
`evaluation.data_dir`. Multiple-choice items are left out: the evaluation protocol has no scorer for
them. Rank 0 only (the engine lives there).

`accuracy_by_band` groups the same way for the held-out probe that `run` takes after each RL stage
(greedy, with the rollout engine that already holds the stage's final weights).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nemo_qwenlong.eval.benchmarks import EvalItem, load_all
from nemo_qwenlong.eval.generate import RESPONSES_FILE, GenerateOptions, InProcessEngine, generate
from nemo_qwenlong.eval.run import score_and_report
from nemo_qwenlong.rewards.hybrid import gold_answer


def _benchmark(item: Any) -> str:
    parts = item.item_id.split("_")
    return f"heldout-{parts[2]}" if item.item_id.startswith("tiny_") and len(parts) > 2 else item.data_source


def heldout_items(items: list[Any]) -> list[EvalItem]:
    return [EvalItem(id=it.item_id, benchmark=_benchmark(it), prompt=it.prompt_text, question=it.question,
                     answers=tuple(it.answers) or (gold_answer(it.kind, it.ground_truth),))
            for it in items if it.kind != "choice"]


def eval_items(cfg: Any, heldout: list[Any]) -> list[EvalItem]:
    ev = cfg.evaluation
    if not ev.benchmarks:
        items = heldout_items(heldout)
        return items[: ev.max_items] if ev.max_items else items
    return load_all(ev.benchmarks, Path(ev.data_dir) if ev.data_dir else None, limit=ev.max_items)


def evaluate_model(engine: Any, tokenizer: Any, items: list[EvalItem], out_dir: Path, cfg: Any, *,
                   model_name: str) -> list[dict[str, Any]]:
    """Responses then scores and report for one model in `out_dir`; returns the per-benchmark summary."""
    ev = cfg.evaluation
    opts = GenerateOptions(temperature=ev.temperature, top_p=ev.top_p, samples=ev.samples, seed=cfg.seed,
                           max_new_tokens=ev.max_new_tokens or cfg.rollout.max_new_tokens,
                           max_input_tokens=ev.max_input_tokens)
    generate(items, out_dir, InProcessEngine(engine, tokenizer), tokenizer, opts)
    judge = cfg.reward.judge if cfg.reward.judge_when != "never" else None
    return score_and_report(out_dir / RESPONSES_FILE, out_dir, judge=judge, model_name=model_name,
                            docmath_extractor=ev.docmath_extractor)


def overall(summary: list[dict[str, Any]], metric: str) -> float:
    """Row-weighted mean of a metric over benchmarks, as a fraction."""
    n = sum(s["n"] for s in summary)
    return sum((s.get(metric) or 0.0) * s["n"] for s in summary) / n / 100.0 if n else 0.0


def accuracy_by_band(items: list[Any], correct: list[bool]) -> dict[str, float]:
    """Fraction correct per benchmark (`heldout-<band>` for the tiny task) and over all items ("all")."""
    bands: dict[str, list[bool]] = {}
    for it, ok in zip(items, correct, strict=True):
        bands.setdefault(_benchmark(it), []).append(bool(ok))
    out = {b: sum(v) / len(v) for b, v in sorted(bands.items())}
    return out | ({"all": sum(correct) / len(correct)} if correct else {})
