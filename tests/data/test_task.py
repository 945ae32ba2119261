"""An item's task (`data.task.task_of`): one definition for task-balanced sampling and the task-level
advantage std."""

from __future__ import annotations

import pytest

from nemo_qwenlong.data.task import task_of


def test_task_is_the_kind_by_default_or_the_source_without_its_length_bucket() -> None:
    assert [task_of(s) for s in ("hotpotqa", "docmath", "long_toc_choices")] == ["qa", "math", "choice"]
    assert task_of("docmath_20000_40000", key="source") == task_of("docmath_0_20000", key="source") == "docmath"
    assert task_of("long_toc_choices_40000_plus", key="source") == "long_toc_choices"


def test_an_unknown_key_names_the_field_and_the_accepted_ones() -> None:
    with pytest.raises(ValueError, match=r"curriculum.task_balance.key='domain' is not one of kind, source"):
        task_of("hotpotqa", key="domain")
