"""An item's task label for task-level statistics (QwenLong-L1.5's task-specific advantage). Pure Python."""

from __future__ import annotations

from typing import Literal

from nemo_qwenlong.data.kind import route

TaskKey = Literal["kind", "data_source"]


def task_of(data_source: str, key: TaskKey = "kind") -> str:
    """`kind`: the item's kind (qa, math, choice; `data.kind.route`); `data_source`: the source name itself."""
    if key == "kind":
        return route(data_source)
    if key == "data_source":
        return data_source
    raise ValueError(f"unknown task key {key!r}; accepted: kind, data_source")
