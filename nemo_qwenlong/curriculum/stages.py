"""Curriculum stages: which items a stage trains on, and how many steps it lasts (spec §5).

Stage k trains on items whose templated prompt length L satisfies min_input_tokens < L <= max_input_tokens
(Eq. 9 as reported). Items outside every band are filtered, as the released loader does with
`filter_overlong_prompts`: never truncated. Every filtered item is counted in `StageSplit`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from nemo_qwenlong.config.pipeline import StageConfig


@dataclass
class StageSplit:
    name: str
    item_ids: list[str] = field(default_factory=list)
    too_long: int = 0
    too_short: int = 0


def split_by_stage(item_ids: Sequence[str], lengths: Mapping[str, int], stages: Sequence[StageConfig]) -> list[StageSplit]:
    """Per stage, the ids in its length band (input order kept) and how many fell outside it."""
    splits = [StageSplit(s.name) for s in stages]
    for item_id in item_ids:
        n = lengths[item_id]
        for stage, split in zip(stages, splits):
            if stage.min_input_tokens < n <= stage.max_input_tokens:
                split.item_ids.append(item_id)
            elif n > stage.max_input_tokens:
                split.too_long += 1
            else:
                split.too_short += 1
    return splits


def unplaced(item_ids: Sequence[str], lengths: Mapping[str, int], stages: Sequence[StageConfig]) -> list[str]:
    """Ids no stage trains on (longer than the last cap, or shorter than every band)."""
    return [i for i in item_ids if not any(s.min_input_tokens < lengths[i] <= s.max_input_tokens for s in stages)]


def stage_steps(stage: StageConfig, num_items: int, batch_size: int, *, drop_last: bool = False) -> int:
    """RL steps of a stage: `steps`, or epochs · items / batch_size rounded up, or down with
    `drop_last` (the released run drops the last partial generation batch: curriculum.drop_last)."""
    if stage.steps is not None:
        return stage.steps
    if num_items == 0:
        return 0
    exact = (stage.epochs or 0) * num_items / batch_size
    return math.floor(exact) if drop_last else max(1, math.ceil(exact))
