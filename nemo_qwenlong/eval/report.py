"""The evaluation report: `report.md`, `results.jsonl` (one line per benchmark), PNG plots.

Every score is given two ways: **all** (every row in the denominator; a failed generation scores 0,
a failed judge call leaves the rule part) and **released** (rows the released scripts would have
lost are dropped: failed generations, items whose judge call hit three 429s or whose scorer raised,
as `*_verify.py` drops them). Scores are percentages, like Table 4. `docmath_official` (DocMath-Eval's
own protocol) stands beside `qwenlong`, never in its place; with the judge path, the rows whose extraction
failed (scored by the rule path instead) are counted.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from pathlib import Path
from typing import Any

from nemo_qwenlong.eval import paper
from nemo_qwenlong.eval.metrics import BENCHMARKS
from nemo_qwenlong.fsio import atomic_write_text

log = logging.getLogger(__name__)
METRIC_ORDER = ("qwenlong", "strict", "judge", "f1", "f1_answer", "em", "docmath_official")
LENGTH_BUCKETS = (0, 4_000, 8_000, 16_000, 32_000, 64_000, 128_000)


def _mean(values: list[float]) -> float | None:
    return 100.0 * sum(values) / len(values) if values else None


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by_bench: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_bench[r["benchmark"]].append(r)
    order = [b for b in BENCHMARKS if b in by_bench] + sorted(b for b in by_bench if b not in BENCHMARKS)
    return [_summary(name, by_bench[name]) for name in order]


def _summary(name: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    gen_failed = [r for r in rows if (r.get("failure") or "").startswith("generation")]
    kept = [r for r in rows if not r["released_dropped"]]
    metrics = [m for m in METRIC_ORDER if any(m in r["scores"] for r in rows)]
    out: dict[str, Any] = {
        "benchmark": name, "n": len(rows), "items": len({r["id"] for r in rows}),
        "samples": max(int(r.get("sample", 0)) for r in rows) + 1,
        "failures": sum(1 for r in rows if r.get("failure")), "generation_failures": len(gen_failed),
        "judge_failures": sum(1 for r in rows if "judge:" in (r.get("failure") or "")),
        "released_dropped": len(rows) - len(kept), "truncated_inputs": sum(1 for r in rows if r.get("truncated")),
        "judged": any("judge" in r["scores"] for r in rows),
    }
    docmath = [r["docmath_official"] for r in rows if isinstance(r.get("docmath_official"), dict)]
    if docmath:
        out["docmath_judge_extracted"] = sum(1 for d in docmath if d.get("extractor") == "judge")
        out["docmath_extractor_failures"] = sum(1 for d in docmath if d.get("extractor_error"))
    for m in metrics:
        out[m] = _mean([r["scores"].get(m) or 0.0 for r in rows])
        out[f"{m}_released"] = _mean([r["scores"].get(m) or 0.0 for r in kept])
    return out


def _fmt(v: float | None) -> str:
    return "—" if v is None else f"{v:.1f}"


def markdown(summary: list[dict[str, Any]], *, model: str) -> str:
    judged = any(s["judged"] for s in summary)
    lines = [f"# Evaluation: {model}", ""]
    failed = sum(s["judge_failures"] for s in summary)
    if failed:  # first, above every score: they hold rule parts only for these rows
        lines += [f"**Judge failures: {failed} of {sum(s['n'] for s in summary)} rows** got no judge verdict (`failure` in "
                  "scores.jsonl says why): their scores are the rule part alone.", ""]
    if not judged:
        lines += ["**No judge configured:** `qwenlong` and `strict` are their rule parts alone "
                  "(the released protocol's final score is max(rule, judge)).", ""]
    lines += ["Scores in %. Each cell: **all rows** (failures count 0) / *released* (rows the released scripts "
              "lose are dropped). `qwenlong` is the released QwenLong-L1 protocol, the number beside Table 4.", "",
              "| benchmark | n | failures | dropped | truncated | qwenlong | strict | judge-only | F1 | F1 (answer) | EM | DocMath official |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in summary:
        cells = [f"{_fmt(s.get(m))} / *{_fmt(s.get(m + '_released'))}*" if m in s else "—"
                 for m in ("qwenlong", "strict", "judge", "f1", "f1_answer", "em", "docmath_official")]
        n = f"{s['n']}" + (f" ({s['items']}×{s['samples']})" if s["samples"] > 1 else "")
        lines.append(f"| {s['benchmark']} | {n} | {s['failures']} | {s['released_dropped']} | {s['truncated_inputs']} | "
                     + " | ".join(cells) + " |")
    lines += _docmath_notes(summary)
    seven = [s for s in summary if s["benchmark"] in paper.COLUMNS]
    if seven:
        lines += ["", "## Beside the paper (Table 4, max(EM-side, DeepSeek-V3 judge))", "",
                  "| model | " + " | ".join(s["benchmark"] for s in seven) + " | avg |",
                  "|---|" + "---|" * (len(seven) + 1)]
        ours = [s.get("qwenlong_released") for s in seven]
        avg = sum(v for v in ours if v is not None) / len(ours) if all(v is not None for v in ours) else None
        lines.append(f"| **{model}** (qwenlong, released) | " + " | ".join(_fmt(v) for v in ours) + f" | {_fmt(avg)} |")
        for row in paper.family_rows(model):
            vals = [paper.paper_score(row, s["benchmark"]) for s in seven]
            lines.append(f"| {row} | " + " | ".join(_fmt(v) for v in vals) + f" | {_fmt(sum(vals) / len(vals))} |")
        if len(seven) < len(paper.COLUMNS):
            lines.append(f"\n(avg over the {len(seven)} benchmarks evaluated here, not the paper's seven)")
    return "\n".join(lines) + "\n"


def _docmath_notes(summary: list[dict[str, Any]]) -> list[str]:
    """How `docmath_official` found its answers, and the judge-path extractions that failed."""
    notes = []
    for s in summary:
        if "docmath_extractor_failures" not in s:
            continue
        how = (f"{s['docmath_judge_extracted']} answer(s) extracted by the judge endpoint (DocMath-Eval's prompt)"
               if s["docmath_judge_extracted"] or s["docmath_extractor_failures"] else
               "answers are the phrase after the last \"the answer is\" (rule path)")
        failed = s["docmath_extractor_failures"]
        notes.append(f"- {s['benchmark']}: `docmath_official`: {how}"
                     + (f"; **{failed} extraction(s) failed** (those rows use the rule path)" if failed else ""))
    return ["", "DocMath official (DocMath-Eval's protocol, beside `qwenlong`, never in its place):", *notes] if notes else []


def plot(rows: list[dict[str, Any]], path: Path) -> Path | None:
    """Score by input-length bucket, and the response-length distribution, per benchmark."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib not installed: no eval plots")
        return None
    by_bench: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_bench[r["benchmark"]].append(r)
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4))
    for name, items in by_bench.items():
        buckets: dict[int, list[float]] = defaultdict(list)
        for r in items:
            if r.get("input_tokens") is not None:
                upper = next((b for b in LENGTH_BUCKETS[1:] if r["input_tokens"] <= b), LENGTH_BUCKETS[-1])
                buckets[upper].append(r["scores"].get("qwenlong") or 0.0)
        if buckets:
            xs = sorted(buckets)
            left.plot([f"≤{x // 1000}K" for x in xs], [100 * sum(buckets[x]) / len(buckets[x]) for x in xs],
                      marker="o", label=name)
        lengths = [r.get("output_tokens") or r.get("response_chars", 0) for r in items]
        right.hist(lengths, bins=30, alpha=0.5, label=name)
    left.set_title("qwenlong score by input length (tokens)")
    left.set_ylabel("%")
    right.set_title("response length (tokens; characters when unknown)")
    for ax in (left, right):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def write_report(rows: list[dict[str, Any]], out_dir: Path, *, model: str) -> list[dict[str, Any]]:
    summary = summarize(rows)
    atomic_write_text(out_dir / "results.jsonl", "".join(json.dumps(s) + "\n" for s in summary))
    atomic_write_text(out_dir / "report.md", markdown(summary, model=model))
    plot(rows, out_dir / "plots" / "eval.png")
    return summary
