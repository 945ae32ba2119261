"""Difficulty-aware retrospective sampler (spec §5; the rule is partly public, our choices are marked).

In stage k each batch mixes (1 − share) items of the stage's own length band with `share` hard
items from *earlier* stages. Hard means high difficulty = 1 / mean answer reward over the item's
most recent rollout rewards in the ledger (choice: the training rollouts, not an offline pass; the
last `recent_window` rewards, not the lifetime mean). Candidates are earlier-stage items with at
least one observation that the rule admits (`ledger.eligible`): with `drop_solved`, items whose
recent mean is 1 are not carried; never-solved items (recent mean 0, whose all-wrong groups
dynamic sampling drops) are skipped, weighted low (default) or treated as the hardest, by
`never_solved` (choice). Selection: `threshold` (difficulty ≥ threshold), `top_k` (the k hardest,
ties in random order: choice), or `proportional` (sampled without replacement with p ∝
difficulty). When there are fewer candidates than the share asks for, the rest of the batch
comes from the stage's own band.

Own-band items: pass p over stage k's pool is a seeded permutation per (stage, pass), and a batch
takes its own items from one pass only, so no item appears twice in a batch (as the released
`RandomSampler` with `drop_last`). When the rest of a pass cannot fill a batch, `drop_last` drops
that leftover (the next batch starts the next pass), else the leftover is a short last batch of the
pass. Retrospective items come from earlier stages' pools minus the current pool (bands that
overlap would otherwise let one item come twice). A stage given in `epochs` hands out the batches of
`epochs` passes and then `exhausted()` is true (stages.pass_items); a stage given in `steps` passes
over its pool for ever.

Deterministic for a seed: the own-band order is a per-(stage, pass) permutation and every
retrospective draw (tie order included) uses an RNG derived from (seed, stage, batch index). The
state (stage, batch index, cursor, ledger) is small, so a run resumed mid-stage yields exactly the
batches an uninterrupted run would. `set_stage` to the current stage keeps the cursors, so a loop
may call it after `load_state_dict`. The state carries fingerprints of the item pools (ids in
order) and of the stages (names, bands); loading refuses a run whose pools or stages differ.

Task-balanced (`tasks` given: `curriculum.task_balance`, `curriculum.balance`): the own-band *count* of
each batch, the passes and `exhausted()` are exactly as above, but the items filling those slots come
from per-task streams in balanced shares (`balance.apportion`, the batch's retrospective items counted
towards their task), shuffled together. A task too small for its share of a batch is refused when the
sampler is built (`balance.balance_problems`). The state adds the task cursors and a fingerprint of the
item-task map and weights. Without `tasks` nothing of this runs: the sampler is the one above.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from nemo_qwenlong.config.pipeline import RetrospectiveConfig, StageConfig
from nemo_qwenlong.curriculum import balance
from nemo_qwenlong.curriculum.ledger import DifficultyLedger, eligible, rule_difficulty
from nemo_qwenlong.curriculum.stages import pass_items, retro_quota

log = logging.getLogger(__name__)

STATE_VERSION = 2  # 2: pool and stage fingerprints, recent rewards in the ledger
LEGACY_VERSIONS = (1,)  # loaded without the fingerprint check


@dataclass
class SampledBatch:
    stage: str
    stage_index: int
    index: int  # batch number within the stage
    own: list[str]
    retro: list[str]

    @property
    def item_ids(self) -> list[str]:
        return self.own + self.retro


@dataclass
class _RetroStats:
    candidates: int = 0
    picked: int = 0
    mean_difficulty: float = 0.0
    never_solved: int = 0  # picked items with no correct reward in their recent window
    picked_from: dict[str, int] = field(default_factory=dict)


def select_hard(
    candidates: Sequence[str], difficulties: Mapping[str, float], n: int, cfg: RetrospectiveConfig, rng: random.Random
) -> list[str]:
    """Pick n hard items by the configured rule (fewer if the rule admits fewer). Items of equal
    difficulty are ranked in an `rng` order (choice: not by id, which would always favour the
    same ones), so `top_k` draws its ties afresh each batch."""
    if n <= 0 or not candidates:
        return []
    if cfg.selection == "threshold":
        pool = [c for c in candidates if difficulties[c] >= cfg.threshold]
        return rng.sample(pool, min(n, len(pool)))
    if cfg.selection == "top_k":
        shuffled = list(candidates)
        rng.shuffle(shuffled)
        pool = sorted(shuffled, key=lambda c: -difficulties[c])[: cfg.top_k]  # stable: ties keep the shuffle
        return rng.sample(pool, min(n, len(pool)))
    # proportional: weighted sampling without replacement (Efraimidis-Spirakis keys u^(1/w))
    keyed = sorted(candidates, key=lambda c: (rng.random() ** (1.0 / difficulties[c]), c), reverse=True)
    return keyed[:n]


class RetrospectiveSampler:
    def __init__(
        self,
        pools: Sequence[Sequence[str]],
        stages: Sequence[StageConfig],
        *,
        batch_size: int,
        seed: int,
        drop_last: bool,
        ledger: DifficultyLedger | None = None,
        tasks: Mapping[str, str] | None = None,
        task_weights: Mapping[str, float] | None = None,
    ) -> None:
        """`tasks` (item id -> task, for every pool item) turns on task-balanced sampling with
        `task_weights` (relative; a task not named weighs 1); None keeps the plain sampler."""
        if len(pools) != len(stages):
            raise ValueError(f"got {len(pools)} item pools for {len(stages)} curriculum stages")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.pools = [list(p) for p in pools]
        self.stages = list(stages)
        self.batch_size = batch_size
        self.seed = seed
        self.drop_last = drop_last
        need = _rewards_needed(self.stages)
        self.ledger = ledger if ledger is not None else DifficultyLedger(keep=need)  # an empty one is falsy
        self.ledger.retain(need)
        self.stage_index = 0
        self.batch_in_stage = 0
        self.own_cursor = 0
        self._perms: dict[tuple[int, int], list[str]] = {}
        self._last = _RetroStats()
        self.tasks = dict(tasks) if tasks is not None else None
        self.task_weights = dict(task_weights or {})
        self._streams: balance.TaskStreams | None = None
        self._last_tasks: dict[str, int] = {}
        if self.tasks is not None:
            problems = balance.balance_problems(self.pools, [s.name for s in self.stages], self.tasks,
                                                self.task_weights, batch_size)
            if problems:
                raise ValueError("task-balanced sampling: " + "; ".join(problems))
            self._start_streams()

    # --- schedule ---------------------------------------------------------------------------------
    def set_stage(self, index: int) -> None:
        """Move to stage `index`, starting it from its first batch. The current stage is a no-op, so
        a loop that calls set_stage(k) after `load_state_dict` continues the stage mid-way."""
        if not 0 <= index < len(self.stages):
            raise ValueError(f"stage index {index} is not in 0..{len(self.stages) - 1}")
        if index == self.stage_index:
            return
        self.stage_index, self.batch_in_stage, self.own_cursor = index, 0, 0
        self._start_streams()

    @property
    def stage(self) -> StageConfig:
        return self.stages[self.stage_index]

    def exhausted(self) -> bool:
        """True when the current stage (given in `epochs`) has handed out all its batches: the next
        batch cannot be drawn. Always False for a stage given in `steps`."""
        retro, _ = self._retro_items(self.stage_index, self.stage.retrospective)
        return self._own_span(self.batch_size - len(retro)) is None

    def next_batch(self) -> SampledBatch:
        k, stage = self.stage_index, self.stage
        retro, self._last = self._retro_items(k, stage.retrospective)
        span = self._own_span(self.batch_size - len(retro))
        if span is None:
            raise ValueError(f"curriculum stage '{stage.name}' has handed out every batch of its {stage.epochs} "
                             f"epoch(s) over {len(self.pools[k])} items; check exhausted() before next_batch()")
        start, count = span
        own = self._own_items(k, start, count, retro)
        self.own_cursor = start + count
        batch = SampledBatch(stage.name, k, self.batch_in_stage, own, retro)
        self.batch_in_stage += 1
        return batch

    def _own_span(self, want: int) -> tuple[int, int] | None:
        """(first cursor position, count) of the next batch's `want` own-band items, all inside one
        pass (`drop_last`: a pass's leftover that cannot fill them is skipped; else it is a short
        batch); None when the stage's passes are used up."""
        stage, size = self.stage, len(self.pools[self.stage_index])
        if not size:
            raise ValueError(
                f"curriculum stage '{stage.name}' has no items with {stage.min_input_tokens} < prompt tokens "
                f"<= {stage.max_input_tokens}"
            )
        if stage.epochs is None and self.drop_last and want > size:
            raise ValueError(f"curriculum stage '{stage.name}' has {size} items, fewer than the {want} a batch takes "
                             "from its band (rl.gen_batch_size) with curriculum.drop_last")
        p, offset = divmod(self.own_cursor, size)
        while stage.epochs is None or p < math.ceil(stage.epochs):
            left = pass_items(stage.epochs, size, p) - offset
            if left >= want or (left > 0 and not self.drop_last):
                return p * size + offset, min(left, want)
            p, offset = p + 1, 0
        return None

    def _own_items(self, k: int, start: int, count: int, retro: Sequence[str]) -> list[str]:
        if self._streams is None:
            return [self._own_at(k, start + j) for j in range(count)]
        weights = balance.stage_weights(self._streams.items, self.task_weights)
        held: dict[str, int] = {}
        for item in retro:
            held[self.tasks[item]] = held.get(self.tasks[item], 0) + 1
        shares = balance.apportion(count, weights, held)
        own = [item for t in sorted(shares) for item in self._streams.take(t, shares[t])]
        random.Random(f"{self.seed}-mix-{k}-{self.batch_in_stage}").shuffle(own)
        self._last_tasks = {t: shares[t] + held.get(t, 0) for t in sorted(set(shares) | set(held))}
        return own

    def _start_streams(self, cursors: Mapping[str, int] | None = None) -> None:
        if self.tasks is None:
            return
        k = self.stage_index
        self._streams = balance.TaskStreams(balance.stage_tasks(self.pools[k], self.tasks), seed=self.seed, stage=k)
        if cursors is not None:
            if set(cursors) != set(self._streams.cursors):
                raise ValueError(f"sampler checkpoint has task cursors for {sorted(cursors)}, this stage has the tasks "
                                 f"{sorted(self._streams.cursors)}")
            self._streams.cursors = {t: int(c) for t, c in cursors.items()}

    def task_summary(self) -> str:
        """The current stage's tasks, items and largest share of a batch (the stage-start line); '' when off."""
        if self._streams is None:
            return ""
        weights = balance.stage_weights(self._streams.items, self.task_weights)
        need = balance.task_needs(weights, self.batch_size)
        return "tasks " + ", ".join(f"{t} {len(self._streams.items[t])} items (up to {need[t]} a batch)"
                                    for t in sorted(need))

    def _own_at(self, k: int, position: int) -> str:
        pool = self.pools[k]
        epoch, offset = divmod(position, len(pool))
        key = (k, epoch)
        if key not in self._perms:
            perm = list(pool)
            random.Random(f"{self.seed}-own-{k}-{epoch}").shuffle(perm)
            self._perms = {kk: v for kk, v in self._perms.items() if kk[0] == k and kk[1] >= epoch - 1}
            self._perms[key] = perm
        return self._perms[key][offset]

    def _retro_items(self, k: int, cfg: RetrospectiveConfig) -> tuple[list[str], _RetroStats]:
        """The next batch's retrospective items and their stats (no state changes: `exhausted` peeks)."""
        if k == 0 or cfg.share <= 0:
            return [], _RetroStats()
        own = set(self.pools[k])
        earlier = {item: self.stages[j].name for j in range(k) for item in self.pools[j] if item not in own}
        means = {i: self.ledger.recent_mean(i, cfg.recent_window) for i in earlier if i in self.ledger}
        candidates = sorted(i for i, m in means.items() if eligible(m, cfg))
        diffs = {c: rule_difficulty(means[c], cfg) for c in candidates}
        rng = random.Random(f"{self.seed}-retro-{k}-{self.batch_in_stage}")
        picked = select_hard(candidates, diffs, retro_quota(self.batch_size, cfg.share), cfg, rng)
        stats = _RetroStats(
            candidates=len(candidates), picked=len(picked),
            mean_difficulty=sum(diffs[p] for p in picked) / len(picked) if picked else 0.0,
            never_solved=sum(means[p] <= 0 for p in picked),
        )
        for p in picked:
            stats.picked_from[earlier[p]] = stats.picked_from.get(earlier[p], 0) + 1
        return picked, stats

    # --- feedback ---------------------------------------------------------------------------------
    def observe(self, results: Mapping[str, Sequence[float]] | Iterable[tuple[str, Sequence[float]]], *, step: int) -> None:
        """Record the answer rewards (0/1 correctness) of each item's rollouts."""
        pairs = results.items() if isinstance(results, Mapping) else results
        for item_id, rewards in pairs:
            self.ledger.observe(item_id, rewards, step=step, stage=self.stage.name)

    def metrics(self) -> dict[str, float]:
        pool = self.pools[self.stage_index]
        return {
            "sampler/stage_index": float(self.stage_index),
            "sampler/batch_in_stage": float(self.batch_in_stage),
            "sampler/epoch": self.own_cursor / len(pool) if pool else 0.0,
            "sampler/retro_candidates": float(self._last.candidates),
            "sampler/retro_items": float(self._last.picked),
            "sampler/retro_mean_difficulty": self._last.mean_difficulty,
            "sampler/retro_never_solved": float(self._last.never_solved),
            "ledger/items": float(len(self.ledger)),
        } | self._task_metrics()

    def _task_metrics(self) -> dict[str, float]:
        if self._streams is None:
            return {}
        out = {f"sampler/task_items/{t}": float(n) for t, n in self._last_tasks.items()}
        return out | {f"sampler/task_passes/{t}": self._streams.passes(t) for t in sorted(self._streams.items)}

    # --- checkpoint -------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"version": STATE_VERSION, "seed": self.seed, "batch_size": self.batch_size,
                "stage_index": self.stage_index, "batch_in_stage": self.batch_in_stage,
                "own_cursor": self.own_cursor, "ledger": self.ledger.state_dict(),
                "pools": [pool_fingerprint(p) for p in self.pools],
                "stages": [stage_fingerprint(s) for s in self.stages]} | self._task_state()

    def _task_state(self) -> dict:
        if self._streams is None:
            return {}
        return {"task_balance": {"fingerprint": task_fingerprint(self.tasks, self.task_weights),
                                 "cursors": dict(self._streams.cursors)}}

    def load_state_dict(self, state: dict) -> None:
        """Restore a checkpoint of this run: same seed, batch size, pools and stages, else ValueError
        naming what differs (version-1 checkpoints carry no fingerprints and load unchecked)."""
        for key in ("seed", "batch_size"):
            if state.get(key) != getattr(self, key):
                raise ValueError(
                    f"sampler checkpoint has {key}={state.get(key)}, this run has {getattr(self, key)}: "
                    "resuming would not reproduce the batches"
                )
        version = state.get("version")
        if version in LEGACY_VERSIONS:
            log.warning("sampler checkpoint version %s has no pool/stage fingerprints: not checked", version)
        elif version != STATE_VERSION:
            raise ValueError(f"sampler checkpoint version {version} is not {STATE_VERSION}")
        else:
            self._check_fingerprints(state)
        self.stage_index, self.batch_in_stage = int(state["stage_index"]), int(state["batch_in_stage"])
        self.own_cursor = int(state["own_cursor"])
        self.ledger.load_state_dict(state["ledger"])
        self._perms = {}
        self._load_task_state(state.get("task_balance"))

    def _load_task_state(self, saved: dict | None) -> None:
        if (saved is None) != (self.tasks is None):
            raise ValueError(f"sampler checkpoint was {'not ' if saved is None else ''}task-balanced, this run "
                             f"{'is' if saved is None else 'is not'} (curriculum.task_balance.enabled)")
        if saved is None:
            return
        if saved["fingerprint"] != task_fingerprint(self.tasks, self.task_weights):
            raise ValueError("sampler checkpoint's item tasks or task weights differ from this run's "
                             "(curriculum.task_balance.key / weights, or the data changed)")
        self._start_streams(saved["cursors"])

    def _check_fingerprints(self, state: dict) -> None:
        """ValueError naming every stage (name, band) or item pool that differs from the checkpoint's."""
        problems = _stage_differences(state["stages"], [stage_fingerprint(s) for s in self.stages])
        if not problems:
            ours = [pool_fingerprint(p) for p in self.pools]
            problems = [_pool_difference(k, self.stages[k].name, a, b)
                        for k, (a, b) in enumerate(zip(state["pools"], ours)) if a != b]
        if problems:
            raise ValueError("sampler checkpoint does not match this run: " + "; ".join(problems))


def _rewards_needed(stages: Sequence[StageConfig]) -> int:
    """Recent rewards the ledger must hold per item: the largest window any stage reads."""
    return max((s.retrospective.recent_window or 0 for s in stages), default=0)


def task_fingerprint(tasks: Mapping[str, str], weights: Mapping[str, float]) -> str:
    """sha256 of the item -> task map and the weights (a resumed balanced run must split batches alike)."""
    payload = json.dumps([sorted(tasks.items()), sorted(weights.items())])
    return hashlib.sha256(payload.encode()).hexdigest()


def pool_fingerprint(pool: Sequence[str]) -> dict:
    """Size and sha256 of a pool's item ids in order (the own-band permutations depend on the order)."""
    digest = hashlib.sha256(json.dumps(list(pool)).encode()).hexdigest()
    return {"items": len(pool), "sha256": digest}


def stage_fingerprint(stage: StageConfig) -> dict:
    """What defines a stage's items: its name and its length band."""
    return {"name": stage.name, "min_input_tokens": stage.min_input_tokens,
            "max_input_tokens": stage.max_input_tokens}


def _show_stage(f: dict) -> str:
    return f"'{f['name']}' ({f['min_input_tokens']}, {f['max_input_tokens']}]"


def _stage_differences(saved: list[dict], ours: list[dict]) -> list[str]:
    if len(saved) != len(ours):
        return [f"checkpoint has {len(saved)} curriculum stages [{', '.join(map(_show_stage, saved))}], "
                f"this run has {len(ours)} [{', '.join(map(_show_stage, ours))}]"]
    return [f"stage {k}: checkpoint has {_show_stage(a)}, this run has {_show_stage(b)}"
            for k, (a, b) in enumerate(zip(saved, ours)) if a != b]


def _pool_difference(k: int, name: str, saved: dict, ours: dict) -> str:
    return (f"item pool of stage {k} '{name}' differs (checkpoint: {saved['items']} items, sha256 "
            f"{saved['sha256'][:12]}; this run: {ours['items']} items, sha256 {ours['sha256'][:12]}): "
            "the data, the length filter or the item order changed")
