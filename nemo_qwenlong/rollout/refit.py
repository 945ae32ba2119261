"""Refit plumbing shared by the engines, and the trainer–engine agreement check. Pure torch.

After every refit the engine scores a small probe batch (prompt + response from the last rollout)
and the trainer computes the same token log-probs at temperature 1. Reported every step:

    logprob_abs_diff_mean / _max   over valid tokens, |engine − trainer|
    prob_ratio_mean                mean of exp(engine − trainer) (1 when they agree)

`rollout.logprob_max_abs_diff` (when set) turns a mean difference above it into a stop with
`EngineTrainerMismatch` (a wrong refit mapping, a dtype or kernel mismatch); unset, it only logs.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import torch
from torch import Tensor

from nemo_qwenlong.algorithms.batch import TokenRows
from nemo_qwenlong.algorithms.packing import budget_groups, tensor_bytes
from nemo_qwenlong.rollout.generator import Sample


class EngineTrainerMismatch(RuntimeError):
    """The rollout engine's log-probs disagree with the trainer's beyond the configured threshold."""


def buckets(named: Iterable[tuple[str, Tensor]], max_bytes: int) -> Iterator[list[tuple[str, Tensor]]]:
    """Group (name, tensor) pairs in order into lists of at most `max_bytes` (one tensor may exceed it)."""
    if max_bytes < 1:
        raise ValueError(f"refit bucket size must be >= 1 byte, got {max_bytes}")
    return budget_groups(named, tensor_bytes, max_bytes)


def agreement(engine: Tensor, trainer: Tensor, mask: Tensor) -> dict[str, float]:
    """Agreement metrics over valid tokens of [N, R] log-prob tensors."""
    mask = mask.bool()
    if not mask.any():
        raise ValueError("agreement check needs at least one valid token in the probe batch")
    diff = (engine.double() - trainer.double())[mask]
    return {"logprob_abs_diff_mean": float(diff.abs().mean()), "logprob_abs_diff_max": float(diff.abs().max()),
            "prob_ratio_mean": float(torch.exp(diff).mean()), "probe_tokens": float(mask.sum())}


def check_agreement(metrics: dict[str, float], threshold: float | None) -> None:
    if threshold is not None and metrics["logprob_abs_diff_mean"] > threshold:
        raise EngineTrainerMismatch(
            f"engine vs trainer token log-probs: mean |diff| {metrics['logprob_abs_diff_mean']:.4g} > "
            f"rollout.logprob_max_abs_diff={threshold} (max {metrics['logprob_abs_diff_max']:.4g}, prob ratio "
            f"{metrics['prob_ratio_mean']:.4g} over {int(metrics['probe_tokens'])} tokens): the refit or the "
            "engine's numerics do not match the trainer")


def probe_rows(prompts: Sequence[Sequence[int]], samples: Sequence[Sequence[Sample]], size: int) -> TokenRows:
    """The first sample of the first `size` prompts with a non-empty response: the agreement probe."""
    picked = [(list(p), list(s[0].token_ids)) for p, s in zip(prompts, samples) if s and s[0].token_ids][:size]
    if not picked:
        raise ValueError("no non-empty response to probe the engine with")
    return TokenRows.from_lists([p for p, _ in picked], [r for _, r in picked])


def refit_and_check(policy, engine, probe: TokenRows, *, bucket_bytes: int,  # noqa: ANN001
                    threshold: float | None) -> dict[str, float]:
    """Stream the policy's weights into the engine, then compare their log-probs on `probe`.

    `policy` needs `state_dict_for_refit()` and `compute_logprobs(rows, temperature=)`; `engine`
    is a Generator. Returns refit and agreement metrics; raises EngineTrainerMismatch (above)."""
    stats = engine.load_weights(policy.state_dict_for_refit(), bucket_bytes=bucket_bytes)
    prompts, responses = probe.to_lists()
    engine_lp = torch.zeros(probe.response_ids.shape, dtype=torch.float32)
    for i, scores in enumerate(engine.score(prompts, responses)):
        engine_lp[i, : len(scores)] = torch.tensor(scores)
    trainer_lp = policy.compute_logprobs(probe, temperature=1.0)
    metrics = agreement(engine_lp, trainer_lp, probe.response_mask)
    metrics |= {"refit_seconds": stats.seconds, "refit_buckets": float(stats.buckets), "refit_mb": stats.bytes / 2**20}
    check_agreement(metrics, threshold)
    return metrics
