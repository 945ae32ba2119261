"""torchrun --nproc-per-node {1,2} megatron_metrics_worker.py OUT: RL train steps of the Megatron policy
(TP=1, so DP = the number of gloo ranks) on the same rows, for tests/backends/test_megatron_metrics.py.

- "metrics": one `train_step` with entropy_coef 0 over 2 groups of 4 rows, dealt by group over the DP
  ranks as `loops.rl.mini_batches` deals them, in micro-batches of about 2 rows: the step's metrics.
- "partial": a partial batch of 3 groups in mini-batches of 2 groups (`on_exhausted: partial`): with
  DP=2 rank 1 has no group in the last mini-batch and trains on `loops.rl.mini_batch_rows`' zero-weight
  row. The rows go through the RL loop's own helpers; the weights' change and each update's metrics.
- "aepo": QwenLong-L1.5 AEPO on the "metrics" rows: the batch entropy before the update
  (`logprobs_and_entropy`, all-reduced over the ranks) and its log-probs; then one update with the
  non-kept rows' responses emptied (`algorithms.aepo.mask_rows`), and, at DP=1, one on the kept rows alone.
Rank 0 writes OUT/result.json and OUT/delta.pt (weights after − before, by HF name).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from tests.backends.megatron_policy_worker import build_policy, hf_model, make_batch  # PYTHONPATH: the repo

GROUP = 4


def rl_config(mini_batch_size: int):
    from nemo_qwenlong.config.training import RLConfig

    return RLConfig(clip_low=0.2, clip_high=0.28, dual_clip=3.0, kl_coef=0.0, entropy_coef=0.0, loss_level="token",
                    group_size=GROUP, train_batch_size=4, mini_batch_size=mini_batch_size)


def fresh_policy():
    """The same starting weights on any number of ranks (transformers' seeded tiny Qwen2)."""
    policy = build_policy(tp=1, lr=1e-3)
    policy.load_hf_state_dict({k: v.detach().clone() for k, v in hf_model().state_dict().items()})
    policy.micro_batch_tokens = 24  # about 2 rows: several micro-batches per rank
    return policy


def metrics_step(rank: int, world: int) -> dict:
    from nemo_qwenlong.loops.rl import mini_batches

    policy, rl = fresh_policy(), rl_config(mini_batch_size=2)
    batch = make_batch(n=2 * GROUP, seed=5)
    (rows,) = mini_batches(2, 2, rank, world, GROUP)
    return policy.train_step(batch.select(rows), rl)


def partial_steps(rank: int, world: int) -> tuple[list[dict], dict]:
    """What `loops.rl.rl_step` does with a partial batch of 3 groups: this rank's rows, old log-probs (two
    updates), one update per mini-batch, a zero-weight row where the rank has no group."""
    from nemo_qwenlong.loops.rl import mini_batch_rows, mini_batches

    policy, rl = fresh_policy(), rl_config(mini_batch_size=2)
    batch = make_batch(n=3 * GROUP, seed=9).replace(old_logprobs=None)
    minis = mini_batches(3, rl.mini_batch_size, rank, world, GROUP)
    rows = sorted(i for m in minis for i in m)
    local = {row: j for j, row in enumerate(rows)}
    mine = batch.select(rows)
    mine = mine.replace(old_logprobs=policy.compute_logprobs(mine))
    before = dict(policy.state_dict_for_refit())
    updates = [policy.train_step(mini_batch_rows(mine, [local[i] for i in m], batch), rl) for m in minis]
    after = dict(policy.state_dict_for_refit())
    return updates, {k: after[k] - before[k] for k in before}


def aepo_steps(rank: int, world: int) -> dict:
    from nemo_qwenlong.algorithms.aepo import kept_rows, mask_rows
    from nemo_qwenlong.loops.rl import mini_batches

    policy, rl = fresh_policy(), rl_config(mini_batch_size=2)
    batch = make_batch(n=2 * GROUP, seed=5)
    batch = batch.replace(rewards=torch.where(torch.arange(2 * GROUP) % 3 == 0, -0.5, 1.0))
    (rows,) = mini_batches(2, 2, rank, world, GROUP)
    logprobs, entropy = policy.logprobs_and_entropy(batch.select(rows))
    logprob_diff = float((logprobs - policy.compute_logprobs(batch.select(rows))).abs().max())
    keep = kept_rows(batch.advantages, batch.rewards)
    out = {"entropy": entropy, "logprob_diff": logprob_diff, "kept": keep.nonzero().squeeze(1).tolist(),
           "masked": policy.train_step(mask_rows(batch, keep).select(rows), rl)}
    if world == 1:
        out["kept_only"] = fresh_policy().train_step(batch.select(out["kept"]), rl)
    return out


def main() -> None:
    out = Path(sys.argv[1])
    dist.init_process_group("gloo")  # init_parallel (in build_policy) then finds it
    rank, world = dist.get_rank(), dist.get_world_size()
    result = {"world": world, "metrics": metrics_step(rank, world)}
    result["partial"], delta = partial_steps(rank, world)
    result["aepo"] = aepo_steps(rank, world)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        (out / "result.json").write_text(json.dumps(result))
        torch.save(delta, out / "delta.pt")
    from nemo_qwenlong.backends.megatron.parallel import destroy_parallel

    destroy_parallel()


if __name__ == "__main__":
    main()
