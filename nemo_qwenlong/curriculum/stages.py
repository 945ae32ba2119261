"""Curriculum stages: which items a stage trains on, and how many steps it lasts (spec §5).

Stage k trains on items whose templated prompt length L satisfies min_input_tokens < L <= max_input_tokens
(Eq. 9 as reported). Items outside every band are filtered, as the released loader does with
`filter_overlong_prompts`: never truncated. Every filtered item is counted in `StageSplit`.

How long a stage lasts: `steps` RL steps, or, given in `epochs`, until its data runs out: the sampler
hands out the batches of `epochs` passes over the stage's pool (`pass_items`; a batch never spans two
passes, `pass_batches`) and a step draws one or more of them (dynamic sampling), as the released
verl trainer ends when its epochs of data do. `stage_steps` is the planned count: the cap, and what
the LR schedule counts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction

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


def retro_quota(batch_size: int, share: float) -> int:
    """Retrospective items a batch asks for: round(share · batch_size) (fewer when fewer qualify)."""
    return round(share * batch_size)


def own_per_batch(batch_size: int, share: float) -> int:
    """Own-band items of a batch whose retrospective share is full."""
    return batch_size - retro_quota(batch_size, share)


def pass_items(epochs: float | None, pool_size: int, index: int) -> int:
    """Own-band items pass `index` (0-based) over a stage's pool hands out. A stage given in `epochs`
    makes floor(epochs) whole passes, then a part pass of floor(epochs · pool) − floor(epochs) · pool
    items (exact decimal arithmetic: epochs=1.5 over 30 items is 30 then 15), then none; a stage given
    in `steps` (epochs None) passes over its pool for ever."""
    if epochs is None:
        return pool_size
    whole = math.floor(epochs)
    if index < whole:
        return pool_size
    if index == whole:
        return math.floor(Fraction(str(epochs)) * pool_size) - whole * pool_size
    return 0


def pass_batches(items: int, own: int, *, drop_last: bool) -> int:
    """Batches of `own` own-band items one pass of `items` makes: a batch never takes items of two
    passes, so the pass's leftover (items mod own) is dropped with `drop_last`, else a short batch."""
    return items // own if drop_last else math.ceil(items / own)


def stage_steps(stage: StageConfig, num_items: int, batch_size: int, *, drop_last: bool) -> int:
    """Planned RL steps of a stage (its cap, and what the LR schedule counts): `steps`, or for a
    stage given in `epochs` the sampler batches its passes make when every batch carries its full
    retrospective share (the most they can make). A step draws one or more batches (dynamic
    sampling), and an epoch stage ends when its batches run out (`RetrospectiveSampler.exhausted`),
    so it may take fewer steps than planned, never more."""
    if stage.steps is not None:
        return stage.steps
    if num_items == 0:
        return 0
    own = own_per_batch(batch_size, stage.retrospective.share)
    if own == 0:
        raise ValueError(f"curriculum stage '{stage.name}': retrospective.share={stage.retrospective.share} leaves no "
                         f"own-band item in a batch of {batch_size}, so its epochs never run out; give it in steps")
    whole = math.floor(stage.epochs)
    return (whole * pass_batches(num_items, own, drop_last=drop_last)
            + pass_batches(pass_items(stage.epochs, num_items, whole), own, drop_last=drop_last))
