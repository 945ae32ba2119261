"""One RL step of QwenLong-L1 (spec §4), written against small interfaces: a Policy (the Megatron
policy), a Generator (vLLM or transformers), a reward (`rewards.hybrid.HybridReward`) and the
curriculum sampler.

    sampler batch → n rollouts per prompt → hybrid reward → overlong shaping → dynamic-sampling rounds
    until `train_batch_size` mixed groups (`max_rounds`) → GRPO advantages → old log-probs only when a
    rollout batch gets more than one update → epochs × mini-batch updates (global normalisation in
    the policy) → refit the engine → engine–trainer agreement check → ledger → metrics

QwenLong-L1.5's options, off by default, live in `loops.rl_l15`: the task-level advantage std and AEPO
(the batch entropy from the old-log-prob forward, then masking of the non-positive samples).

Rollouts run on every vLLM engine replica (`rollout.replicas`: each generates its block of the
prompts, the blocks are gathered to every rank) or on rank 0 (the transformers engine); rewards are
scored once, on rank 0 (rule, then the judge), and broadcast. Every rank holds the same samples and
scores, so the sampler and its ledger replicate exactly. Each step's sampling seeds derive from
(run seed, RL step, round), so a resumed run draws what an uninterrupted one would. Surplus mixed
groups of the last round are dropped (as the released code does), so dynamic sampling carries
nothing over between steps.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from nemo_qwenlong.algorithms import DynamicSamplingExhausted, collect_groups, overlong_penalty
from nemo_qwenlong.algorithms.aepo import AepoState
from nemo_qwenlong.algorithms.aepo import metrics as aepo_metrics
from nemo_qwenlong.algorithms.batch import RolloutBatch, TokenRows
from nemo_qwenlong.algorithms.losses import MEAN_METRICS, merge_micro_metrics
from nemo_qwenlong.loops import dist
from nemo_qwenlong.loops.encode import decode
from nemo_qwenlong.loops.rl_l15 import aepo_step, live_mini_batches, step_advantages
from nemo_qwenlong.rewards.hybrid import RewardItem
from nemo_qwenlong.rollout.generator import SamplingSettings, to_rollout_batch
from nemo_qwenlong.rollout.refit import EngineTrainerMismatch, check_agreement, refit_and_check, refit_weights
from nemo_qwenlong.rollout.replicas import merge_agreement, replicated


@dataclass
class RLEnv:
    cfg: Any
    policy: Any
    engine: Any  # vLLM: every rank (EngineReplicas when world > 1); transformers: rank 0, else None
    reward: Any  # None off rank 0
    tokenizer: Any
    items: dict  # item id -> DocQAItem
    prompts: dict  # item id -> prompt token ids
    sampler: Any
    dp_rank: int = 0
    dp_size: int = 1
    progress: Callable[[str, int, int], None] | None = None  # (what, done, total)
    aepo: AepoState | None = None  # rl.aepo.enable only: carried between steps, checkpointed


@dataclass
class RoundLog:
    """What every generation round of one step saw (kept groups or not)."""

    item_ids: list[str] = field(default_factory=list)
    correct: list[float] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    truncated: list[bool] = field(default_factory=list)
    reward: dict[str, float] = field(default_factory=dict)
    generate_s: float = 0.0
    score_s: float = 0.0
    replica_s: list[float] = field(default_factory=list)  # each replica's generation seconds, summed over rounds

    def add_replica_seconds(self, seconds: list[float]) -> None:
        self.replica_s = [a + b for a, b in zip(self.replica_s, seconds)] if self.replica_s else list(seconds)

    def add_reward_metrics(self, metrics: dict[str, float]) -> None:
        for k, v in metrics.items():
            self.reward[k] = self.reward.get(k, 0.0) + v


ROUND_SEED_SPAN = 2**31 - 2**24  # a round's samples take base .. base + prompts·n - 1 (< 2**24), below 2**31


def round_seed(seed: int, step: int, round_index: int) -> int:
    """Base seed of one generation round; its samples take base + position·n + j (`rollout.generator.
    sample_seed`). Hashed from (run seed, step, round): consecutive bases (`… + round_index`) would make
    round r+1's samples re-use round r's seeds shifted by one."""
    digest = hashlib.sha256(f"{seed}|{step}|{round_index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") % ROUND_SEED_SPAN


def item_ids_sha1(ids: list[str]) -> str:
    return hashlib.sha1("\n".join(ids).encode()).hexdigest()


def _settings(*, n: int, temperature: float, top_p: float, top_k: int, max_tokens: int, seed: int) -> SamplingSettings:
    """The one greedy rule: at temperature 0 nucleus and top-k filtering are off."""
    t = temperature
    return SamplingSettings(n=n, temperature=t, top_p=top_p if t > 0 else 1.0, top_k=top_k if t > 0 else -1,
                            max_tokens=max_tokens, seed=seed)


def sampling(rollout: Any, *, n: int, seed: int, max_tokens: int) -> SamplingSettings:
    """Training sampling (rollout.temperature/top_p/top_k; greedy at temperature 0)."""
    return _settings(n=n, temperature=rollout.temperature, top_p=rollout.top_p, top_k=rollout.top_k,
                     max_tokens=max_tokens, seed=seed)


def replicas(engine: Any) -> int:
    return int(getattr(engine, "replicas", 1))


def _generate(env: RLEnv, ids: list[str], settings: SamplingSettings, what: str) -> tuple[list, list[float]]:
    """Every prompt's samples (in `ids` order) and each replica's generation seconds."""
    t0 = time.perf_counter()
    samples: list = [None] * len(ids)
    for done, (i, s) in enumerate(env.engine.generate_iter([env.prompts[x] for x in ids], settings), start=1):
        samples[i] = s
        if env.progress:
            env.progress(what, done, len(ids))
    return samples, getattr(env.engine, "replica_seconds", None) or [time.perf_counter() - t0]


def generate_and_score(env: RLEnv, ids: list[str], settings: SamplingSettings, log: RoundLog | None = None,
                       what: str = "generate"):  # noqa: ANN201
    """Samples and hybrid-reward results for items `ids` on every rank: generated by every engine
    replica (collective) or by rank 0; scored once, on rank 0, and broadcast."""
    payload = None
    samples: Any = None
    spread = replicated(env.engine)
    if spread or dist.is_rank0():
        t0 = time.perf_counter()
        samples, replica_s = _generate(env, ids, settings, what)
        gen_s = time.perf_counter() - t0
    if dist.is_rank0():
        t1 = time.perf_counter()
        requests = [RewardItem(decode(env.tokenizer, s.token_ids), env.items[x].ground_truth,
                               env.items[x].data_source, env.items[x].question)
                    for x, group in zip(ids, samples) for s in group]
        results, stats = env.reward.score(requests)
        decided = {f"reward/decided_by_{d}": float(sum(r.decided_by == d for r in results))
                   for d in ("rule", "judge", "no_answer")}
        decided["reward/rule_correct"] = float(sum(r.rule_score >= 1.0 for r in results))
        payload = (None if spread else samples, [r.score for r in results], stats.as_metrics() | decided, gen_s,
                   replica_s, time.perf_counter() - t1)
    sent, scores, reward_metrics, gen_s, replica_s, score_s = dist.broadcast(payload)
    samples = samples if spread else sent
    if log is not None:
        log.add_reward_metrics(reward_metrics)
        log.generate_s += gen_s
        log.add_replica_seconds(replica_s)
        log.score_s += score_s
    return samples, scores


def rollout_round(env: RLEnv, stage: Any, step: int, round_index: int, log: RoundLog, first_group: int) -> RolloutBatch:
    cfg, g = env.cfg, env.cfg.rl.group_size
    ids = env.sampler.next_batch().item_ids
    settings = sampling(cfg.rollout, n=g, seed=round_seed(cfg.seed, step, round_index),
                        max_tokens=min(stage.max_output_tokens, cfg.rollout.max_new_tokens))
    samples, scores = generate_and_score(env, ids, settings, log)
    batch = to_rollout_batch([env.prompts[x] for x in ids], samples, ids, first_group_id=first_group)
    score = torch.tensor(scores, dtype=torch.float32)
    correct = score >= 1.0
    rewards = score.clone()
    o = cfg.rl.overlong
    if o.enable:
        rewards += overlong_penalty(batch.response_lengths, max_len=settings.max_tokens,
                                    buffer=min(o.buffer, settings.max_tokens), factor=o.factor)
    env.sampler.observe({x: correct[j * g:(j + 1) * g].float().tolist() for j, x in enumerate(ids)}, step=step)
    log.item_ids += ids
    log.correct += correct.float().tolist()
    log.lengths += batch.response_lengths.tolist()
    log.truncated += batch.truncated.tolist()
    return batch.replace(rewards=rewards, correct=correct,
                         sample_ids=batch.sample_ids + first_group * g)


def mini_batches(num_groups: int, mini_groups: int, dp_rank: int, dp_size: int, group_size: int) -> list[list[int]]:
    """Row indices of this DP rank for each mini-batch: global mini-batch j is groups
    [j·M, (j+1)·M), dealt round-robin over DP ranks (every rank gets the same number of mini-batches).
    A mini-batch of fewer groups than DP ranks (a short last one, `on_exhausted: partial`) leaves some
    ranks an empty list: `mini_batch_rows` gives them a zero-weight row."""
    out = []
    for start in range(0, num_groups, mini_groups):
        groups = list(range(start, min(start + mini_groups, num_groups)))[dp_rank::dp_size]
        out.append([gi * group_size + k for gi in groups for k in range(group_size)])
    return out


def zero_weight_row(batch: RolloutBatch) -> RolloutBatch:
    """Row 0 of `batch` with an empty response mask and advantage 0: no token (or sequence) in the global
    denominator, loss 0 and zero gradient, yet its rank runs the step's collectives (count, gradients)."""
    row = batch.select([0])
    return row.replace(response_mask=torch.zeros_like(row.response_mask), advantages=torch.zeros(1),
                       old_logprobs=None)


def mini_batch_rows(mine: RolloutBatch, local_rows: list[int], batch: RolloutBatch) -> RolloutBatch:
    """This rank's rows `local_rows` of `mine` for one update; none (a short mini-batch): a zero-weight
    row of the step's full `batch` (every rank holds it)."""
    return mine.select(local_rows) if local_rows else zero_weight_row(batch)


def updates_per_rollout(rl: Any) -> int:
    return rl.epochs_per_batch * math.ceil(rl.train_batch_size / rl.mini_batch_size)


def probe(batch: RolloutBatch, size: int, group_size: int) -> TokenRows | None:
    """The first sample of the first `size` groups with a non-empty response (agreement check)."""
    rows = [i for i in range(0, batch.num_rows, group_size) if int(batch.response_lengths[i]) > 0][:size]
    if not rows:
        return None
    p = batch.select(rows)
    return TokenRows(p.prompt_ids, p.prompt_lengths, p.response_ids, p.response_mask)


def refit(env: RLEnv, rows: TokenRows | None) -> dict[str, float]:
    """Stream the policy into the engine and check agreement; the collectives run on every rank."""
    if replicated(env.engine):
        return _refit_replicas(env, rows)
    r = env.cfg.rollout
    if rows is None or r.logprob_probe_size == 0:
        if dist.is_rank0():
            return refit_weights(env.policy, env.engine, bucket_bytes=r.refit_bucket_mb * 2**20)
        for _ in env.policy.state_dict_for_refit():
            pass
        return {}
    result: Any = None
    if dist.is_rank0():
        try:
            result = refit_and_check(env.policy, env.engine, rows, bucket_bytes=r.refit_bucket_mb * 2**20,
                                     threshold=r.logprob_max_abs_diff)
        except EngineTrainerMismatch as err:
            result = str(err)
    else:
        for _ in env.policy.state_dict_for_refit():
            pass
        env.policy.compute_logprobs(rows, temperature=1.0)
    result = dist.broadcast(result)
    if isinstance(result, str):
        raise EngineTrainerMismatch(result)
    return result


def _refit_replicas(env: RLEnv, rows: TokenRows | None) -> dict[str, float]:
    """Every rank refits its own engine share from the full tensors its trainer ranks gather, and every
    replica scores the whole probe; the worst replica's agreement is logged and checked on every rank."""
    r = env.cfg.rollout
    bucket = r.refit_bucket_mb * 2**20
    if rows is None or r.logprob_probe_size == 0:
        mine = refit_weights(env.policy, env.engine.local, bucket_bytes=bucket)
    else:
        mine = refit_and_check(env.policy, env.engine.local, rows, bucket_bytes=bucket, threshold=None)
    merged = merge_agreement(dist.all_gather(mine))
    if "logprob_abs_diff_mean" in merged:
        check_agreement(merged, r.logprob_max_abs_diff)
    return merged


def _aepo_log(env: RLEnv, keep: torch.Tensor | None, rows: int) -> dict[str, float]:
    return {} if env.aepo is None else aepo_metrics(env.aepo, keep, rows)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def rl_step(env: RLEnv, stage_index: int, step: int) -> dict[str, Any]:
    """One RL step (see the module docstring); returns its metrics row."""
    cfg, rl, policy = env.cfg, env.cfg.rl, env.policy
    stage = cfg.curriculum.stages[stage_index]
    t0 = time.perf_counter()
    log = RoundLog()
    policy.prepare_for_generation()
    ds = rl.dynamic_sampling
    first = [0]

    def round_fn(r: int) -> RolloutBatch:
        batch = rollout_round(env, stage, step, r, log, first[0])
        first[0] += batch.num_rows // rl.group_size
        return batch

    try:
        batch, ds_stats = collect_groups(round_fn, target_groups=rl.train_batch_size, group_size=rl.group_size,
                                         max_rounds=ds.max_rounds, enable=ds.enable, on_exhausted=ds.on_exhausted,
                                         more_data=lambda: not env.sampler.exhausted())
    except DynamicSamplingExhausted as err:
        if not err.stats.data_ran_out and (ds.on_exhausted == "error" or err.kept is not None):
            raise
        # on_exhausted=partial and not one mixed group, or the stage's data ran out mid-step under
        # on_exhausted=error (the released trainer drops that last accumulation): no gradient this
        # step; the weights (and so the engine) stay as they are, and the step is logged with update_skipped=1.
        return (_row(env, stage, step, log, t0, err.stats, []) | _aepo_log(env, None, 0)
                | {"update_skipped": 1, "reward_mean": float("nan")})
    t_gen = time.perf_counter()
    advantages, adv_log = step_advantages(rl, batch, env.items, cfg.curriculum.task_balance.key)
    batch = batch.replace(advantages=advantages)
    groups = batch.num_rows // rl.group_size
    minis = mini_batches(groups, rl.mini_batch_size, env.dp_rank, env.dp_size, rl.group_size)
    rows = sorted(i for m in minis for i in m)  # this DP rank's rows, in batch order
    mine = batch.select(rows)
    local = {row: j for j, row in enumerate(rows)}
    old_s = 0.0
    need_old = rl.epochs_per_batch * len(minis) > 1  # more than one update: the behaviour policy must be frozen
    train_batch, keep = batch, None
    if env.aepo is not None:  # the batch entropy (and old log-probs) in one forward; masked rows emptied
        t = time.perf_counter()
        train_batch, mine, keep = aepo_step(policy, rl.aepo, env.aepo, batch, mine, rows, need_old)
        old_s = time.perf_counter() - t
    elif need_old:
        t = time.perf_counter()
        mine = mine.replace(old_logprobs=policy.compute_logprobs(mine))
        old_s = time.perf_counter() - t
    live = live_mini_batches(train_batch, mini_batches(groups, rl.mini_batch_size, 0, 1, rl.group_size), keep)
    extra = adv_log | _aepo_log(env, keep, batch.num_rows)
    if not any(live):  # AEPO masked every sample: no update, as a step without a mixed group
        return (_row(env, stage, step, log, t0, ds_stats, []) | extra
                | {"update_skipped": 1, "reward_mean": float(batch.rewards.mean()), "time/old_logprobs_s": old_s})
    if (replicated(env.engine) or dist.is_rank0()) and hasattr(env.engine, "sleep"):  # colocated on GPU: free
        env.engine.sleep()  # the engine's memory for the update (vLLM sleep mode; the refit wakes it); CPU: no-op
    policy.prepare_for_training()
    t_up = time.perf_counter()
    train: list[dict[str, float]] = []
    updates = [m for m, ok in zip(minis, live) if ok]  # a mini-batch AEPO emptied is skipped on every rank
    for _ in range(rl.epochs_per_batch):
        for m in updates:
            train.append(policy.train_step(mini_batch_rows(mine, [local[i] for i in m], batch), rl))
            if env.progress:
                env.progress("update", len(train), rl.epochs_per_batch * len(updates))
    update_s = time.perf_counter() - t_up
    policy.prepare_for_generation()
    agree = refit(env, probe(batch, cfg.rollout.logprob_probe_size, rl.group_size))
    row = _row(env, stage, step, log, t0, ds_stats, train) | {
        "reward_mean": float(batch.rewards.mean()), "update_skipped": 0,
        "old_logprob_pass": need_old, "time/old_logprobs_s": old_s, "time/update_s": update_s,
        "time/refit_s": agree.get("refit_seconds", 0.0), "time/rollout_total_s": t_gen - t0,
        "time/step_s": time.perf_counter() - t0}
    if "refit_peak_extra_mb" in agree:
        row["refit/peak_extra_mb"] = agree["refit_peak_extra_mb"]
    if env.aepo is not None:  # the same on every rank: the update's entropy is over all ranks' tokens
        env.aepo.last_update = row.get("entropy")
    return row | extra | {k: v for k, v in agree.items() if k.startswith("logprob") or k == "prob_ratio_mean"}


def _row(env: RLEnv, stage: Any, step: int, log: RoundLog, t0: float, ds_stats: Any,
         train: list[dict[str, float]]) -> dict[str, Any]:
    row: dict[str, Any] = {
        "phase": "rl", "stage": stage.name, "step": step,
        "loss": _mean([m["loss"] for m in train]),
        "accuracy": _mean(log.correct),
        "item_ids_sha1": item_ids_sha1(log.item_ids),
        "response_len_mean": _mean([float(x) for x in log.lengths]),
        "truncated_frac": _mean([float(x) for x in log.truncated]),
        "optimizer_steps": len(train), "old_logprob_pass": False,
        "time/generate_s": log.generate_s, "time/score_s": log.score_s, "time/step_s": time.perf_counter() - t0,
        "rollout/replicas": replicas(env.engine),
        "time/generate_s_max": max(log.replica_s, default=0.0), "time/generate_s_min": min(log.replica_s, default=0.0),
    }
    for key in ("grad_norm", "skipped_steps", "lr"):
        values = [m[key] for m in train if key in m]
        if values:  # skipped_steps is a running count: its last value is the newest
            row[key] = max(values) if key in ("grad_norm", "skipped_steps") else _mean(values)
    # entropy, KL to the behaviour policy (approx_kl), ratio and clip statistics: each update's values are
    # already over all its tokens on all ranks; the step's are token-weighted over its updates
    merged = merge_micro_metrics(train)
    row |= {k: merged[k] for k in (*MEAN_METRICS, "ratio_min", "ratio_max") if k in merged}
    return row | ds_stats.as_metrics() | log.reward | env.sampler.metrics()


def validation_sampling(rollout: Any, *, seed: int, max_tokens: int) -> SamplingSettings:
    """Validation sampling: `rollout.val_samples` samples per item at `rollout.val_temperature` with nucleus
    mass `rollout.val_top_p` (and the training top-k); greedy at temperature 0, where one sample is all
    there is (n samples would be identical)."""
    t = rollout.val_temperature
    return _settings(n=rollout.val_samples if t > 0 else 1, temperature=t, top_p=rollout.val_top_p,
                     top_k=rollout.top_k, max_tokens=max_tokens, seed=seed)


def probe_sampling(evaluation: Any, rollout: Any, *, seed: int) -> SamplingSettings:
    """The held-out probe after a stage: one sample per item at `evaluation.temperature` (0: greedy),
    `evaluation.max_new_tokens` (default: the rollout's cap)."""
    return _settings(n=1, temperature=evaluation.temperature, top_p=rollout.top_p, top_k=rollout.top_k,
                     max_tokens=evaluation.max_new_tokens or rollout.max_new_tokens, seed=seed)


def evaluate_items(env: RLEnv, items: list, settings: SamplingSettings,
                   what: str = "validate") -> list[dict[str, Any]]:
    """`settings.n` samples per item; per item: id, correct (the fraction of its samples scored 1), scores,
    and the first sample's response and truncation (rank 0's, shared)."""
    ids = [it.item_id for it in items]
    samples, scores = generate_and_score(env, ids, settings, what=what)
    out, start = [], 0
    for x, group in zip(ids, samples):
        mine = scores[start:start + len(group)]
        start += len(group)
        out.append({"item_id": x, "correct": _mean([float(s >= 1.0) for s in mine]), "scores": mine,
                    "response": decode(env.tokenizer, group[0].token_ids), "truncated": group[0].truncated})
    return out
