"""An item's kind (qa, math, choice), from its `data_source` (spec §1.1): the data validates it, the reward
routes on it (`rewards.hybrid` picks the scorer by kind). Pure Python."""

from __future__ import annotations

from typing import Literal

Kind = Literal["qa", "math", "choice"]
# Substring of `data_source` -> scorer, in match order (the released router matches substrings too).
ROUTES: tuple[tuple[str, Kind], ...] = (
    ("long_toc_choices", "choice"),
    ("choice", "choice"),
    ("docmath", "math"),
    ("math", "math"),
    ("multihoprag", "qa"),
    ("musique", "qa"),
    ("hotpotqa", "qa"),
    ("2wikimqa", "qa"),
    ("narrativeqa", "qa"),
    ("qasper", "qa"),
    ("frames", "qa"),
    ("qa", "qa"),  # e.g. the released test split's `qa_test`, which the released router rejects
)


def route(data_source: str) -> Kind:
    for needle, kind in ROUTES:
        if needle in data_source:
            return kind
    raise ValueError(
        f"unknown data_source {data_source!r}: it must contain one of {', '.join(n for n, _ in ROUTES)}"
    )
