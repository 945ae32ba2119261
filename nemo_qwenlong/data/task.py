"""An item's task (QwenLong-L1.5): what task-balanced sampling balances and the task-level advantage std
groups by; `curriculum.task_balance.key` chooses it for both. Pure Python.

`kind`: the route kind of its `data_source` (qa, math, choice: `data.kind.route`); `source`: the
`data_source` without the released length-bucket suffix (`docmath_0_20000` and `docmath_20000_40000` are
one task, `docmath`).
"""

from __future__ import annotations

import re

from nemo_qwenlong.data.kind import route

TASK_KEYS = ("kind", "source")
_LENGTH_BUCKET = re.compile(r"_\d+_(\d+|plus)$")  # the released suffixes: _0_20000, _20000_40000, _40000_plus


def task_of(data_source: str, key: str = "kind") -> str:
    """An item's task: its route kind (`kind`) or its `data_source` less the length-bucket suffix (`source`)."""
    if key == "kind":
        return route(data_source)
    if key == "source":
        return _LENGTH_BUCKET.sub("", data_source)
    raise ValueError(f"curriculum.task_balance.key={key!r} is not one of {', '.join(TASK_KEYS)}")
