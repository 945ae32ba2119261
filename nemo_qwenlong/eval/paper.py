"""Table 4 of the QwenLong-L1 paper (arXiv 2505.17667; spec §9), open-source rows: max(EM-side, judge), %."""

from __future__ import annotations

COLUMNS = ("docmath", "frames", "2wikimqa", "hotpotqa", "musique", "narrativeqa", "qasper")
TABLE4: dict[str, tuple[float, ...]] = {
    "R1-Distill-Qwen-14B": (61.0, 64.2, 87.0, 77.5, 58.0, 51.0, 51.0),
    "R1-Distill-Qwen-14B-SFT": (60.0, 65.7, 88.5, 80.5, 60.0, 52.0, 48.5),
    "QwenLong-L1-14B-GRPO": (65.0, 68.7, 88.5, 86.5, 63.5, 53.5, 51.5),
    "QwenLong-L1-14B-DAPO": (65.5, 67.4, 89.0, 84.0, 63.0, 57.0, 52.5),
    "R1-Distill-Qwen-32B": (62.5, 67.0, 84.0, 80.5, 61.0, 54.0, 50.0),
    "R1-Distill-Qwen-32B-SFT": (65.0, 71.6, 87.0, 80.5, 65.5, 57.5, 54.0),
    "QwenLong-L1-32B-GRPO": (68.0, 72.2, 87.0, 82.0, 66.0, 61.0, 56.0),
    "QwenLong-L1-32B-DAPO": (67.5, 70.1, 90.5, 83.0, 69.0, 56.0, 58.5),
}


def family_rows(model_name: str) -> dict[str, tuple[float, ...]]:
    """The rows of the model's size (14B / 32B, read from its name); both sizes when it names neither."""
    for size in ("14B", "32B"):
        if size.lower() in model_name.lower():
            return {k: v for k, v in TABLE4.items() if size in k}
    return dict(TABLE4)


def paper_score(row: str, benchmark: str) -> float | None:
    return TABLE4[row][COLUMNS.index(benchmark)] if benchmark in COLUMNS else None
