"""Difficulty-aware retrospective sampler (spec §5; the rule is partly public, our choices are marked).

In stage k each batch mixes (1 − share) items of the stage's own length band with `share` hard
items from *earlier* stages. Hard means high difficulty = 1 / mean answer reward, from the ledger
of rewards seen in rollouts so far (choice: the training rollouts, not an offline pass). Candidates
are earlier-stage items with at least one observation; with `drop_solved`, items whose mean is 1
are never carried. Selection: `threshold` (difficulty ≥ threshold), `top_k` (the k hardest), or
`proportional` (sampled without replacement with p ∝ difficulty). When there are fewer candidates
than the share asks for, the rest of the batch comes from the stage's own band.

Deterministic for a seed: the own-band order is a per-(stage, epoch) permutation and every
retrospective draw uses an RNG derived from (seed, stage, batch index). The state (stage, batch
index, cursor, ledger) is small, so a run resumed mid-stage yields exactly the batches an
uninterrupted run would.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from nemo_qwenlong.config.pipeline import RetrospectiveConfig, StageConfig
from nemo_qwenlong.curriculum.ledger import DifficultyLedger, difficulty

STATE_VERSION = 1


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
    picked_from: dict[str, int] = field(default_factory=dict)


def select_hard(
    candidates: Sequence[str], difficulties: Mapping[str, float], n: int, cfg: RetrospectiveConfig, rng: random.Random
) -> list[str]:
    """Pick n hard items by the configured rule (fewer if the rule admits fewer)."""
    if n <= 0 or not candidates:
        return []
    if cfg.selection == "threshold":
        pool = [c for c in candidates if difficulties[c] >= cfg.threshold]
        return rng.sample(pool, min(n, len(pool)))
    if cfg.selection == "top_k":
        pool = sorted(candidates, key=lambda c: (-difficulties[c], c))[: cfg.top_k]
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
        ledger: DifficultyLedger | None = None,
    ) -> None:
        if len(pools) != len(stages):
            raise ValueError(f"got {len(pools)} item pools for {len(stages)} curriculum stages")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.pools = [list(p) for p in pools]
        self.stages = list(stages)
        self.batch_size = batch_size
        self.seed = seed
        self.ledger = ledger or DifficultyLedger()
        self.stage_index = 0
        self.batch_in_stage = 0
        self.own_cursor = 0
        self._perms: dict[tuple[int, int], list[str]] = {}
        self._last = _RetroStats()

    # --- schedule ---------------------------------------------------------------------------------
    def set_stage(self, index: int) -> None:
        if not 0 <= index < len(self.stages):
            raise ValueError(f"stage index {index} is not in 0..{len(self.stages) - 1}")
        self.stage_index, self.batch_in_stage, self.own_cursor = index, 0, 0

    @property
    def stage(self) -> StageConfig:
        return self.stages[self.stage_index]

    def next_batch(self) -> SampledBatch:
        k, stage = self.stage_index, self.stage
        pool = self.pools[k]
        if not pool:
            raise ValueError(
                f"curriculum stage '{stage.name}' has no items with {stage.min_input_tokens} < prompt tokens "
                f"<= {stage.max_input_tokens}"
            )
        retro = self._retro_items(k, stage.retrospective)
        own = [self._own_at(k, self.own_cursor + j) for j in range(self.batch_size - len(retro))]
        self.own_cursor += len(own)
        batch = SampledBatch(stage.name, k, self.batch_in_stage, own, retro)
        self.batch_in_stage += 1
        return batch

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

    def _retro_items(self, k: int, cfg: RetrospectiveConfig) -> list[str]:
        self._last = _RetroStats()
        if k == 0 or cfg.share <= 0:
            return []
        earlier = {item: self.stages[j].name for j in range(k) for item in self.pools[j]}
        candidates = sorted(
            i for i in earlier if i in self.ledger and not (cfg.drop_solved and self.ledger.mean(i) >= 1.0)
        )
        diffs = {c: difficulty(self.ledger.mean(c), cfg.zero_reward_difficulty) for c in candidates}
        rng = random.Random(f"{self.seed}-retro-{k}-{self.batch_in_stage}")
        picked = select_hard(candidates, diffs, round(cfg.share * self.batch_size), cfg, rng)
        self._last = _RetroStats(
            candidates=len(candidates), picked=len(picked),
            mean_difficulty=sum(diffs[p] for p in picked) / len(picked) if picked else 0.0,
        )
        for p in picked:
            self._last.picked_from[earlier[p]] = self._last.picked_from.get(earlier[p], 0) + 1
        return picked

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
            "ledger/items": float(len(self.ledger)),
        }

    # --- checkpoint -------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"version": STATE_VERSION, "seed": self.seed, "batch_size": self.batch_size,
                "stage_index": self.stage_index, "batch_in_stage": self.batch_in_stage,
                "own_cursor": self.own_cursor, "ledger": self.ledger.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        for key in ("seed", "batch_size"):
            if state.get(key) != getattr(self, key):
                raise ValueError(
                    f"sampler checkpoint has {key}={state.get(key)}, this run has {getattr(self, key)}: "
                    "resuming would not reproduce the batches"
                )
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"sampler checkpoint version {state.get('version')} is not {STATE_VERSION}")
        self.stage_index, self.batch_in_stage = int(state["stage_index"]), int(state["batch_in_stage"])
        self.own_cursor = int(state["own_cursor"])
        self.ledger.load_state_dict(state["ledger"])
        self._perms = {}
