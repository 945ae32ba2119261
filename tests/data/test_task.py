"""An item's task label (`data.task.task_of`) for the task-level advantage std."""

from __future__ import annotations

import pytest

from nemo_qwenlong.data.task import task_of


def test_task_is_the_kind_by_default_or_the_source_itself() -> None:
    assert [task_of(s) for s in ("hotpotqa", "docmath", "long_toc_choices")] == ["qa", "math", "choice"]
    assert task_of("docmath", key="data_source") == "docmath"


def test_an_unknown_key_names_the_accepted_ones() -> None:
    with pytest.raises(ValueError, match="accepted: kind, data_source"):
        task_of("hotpotqa", key="domain")
