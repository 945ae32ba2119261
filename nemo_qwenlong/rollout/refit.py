"""Refit plumbing shared by the engines, and the trainer–engine agreement check. Pure torch.

After every refit the engine scores a small probe batch (prompt + response from the last rollout)
and the trainer computes the same token log-probs at temperature 1. Reported every step:

    logprob_abs_diff_mean / _max   over valid tokens, |engine − trainer|
    prob_ratio_mean                mean of exp(engine − trainer) (1 when they agree)

`rollout.logprob_max_abs_diff` (when set) turns a mean difference above it into a stop with
`EngineTrainerMismatch` (a wrong refit mapping, a dtype or kernel mismatch); unset, it only logs.

`ExtraBytes` measures the refit's peak extra memory: the bytes of the tensors it streams that are not
the trainer's own parameters (TP gathers, fused-weight splits), alive at the same time.
"""

from __future__ import annotations

import weakref
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


class ExtraBytes:
    """Peak bytes of streamed tensors alive at once, leaving out views of `resident` tensors (the
    trainer's parameters, which exist anyway). A storage counts from the first streamed tensor on it
    until the last of them is freed (its Python object collected)."""

    def __init__(self, resident: Iterable[Tensor] = ()) -> None:
        self.resident = {t.untyped_storage().data_ptr() for t in resident}
        self.refs: dict[int, int] = {}
        self.now = self.peak = 0

    def watch(self, named: Iterable[tuple[str, Tensor]]) -> Iterator[tuple[str, Tensor]]:
        for name, t in named:
            storage = t.untyped_storage()
            ptr, size = storage.data_ptr(), storage.nbytes()
            if ptr not in self.resident and size:
                if ptr not in self.refs:
                    self.refs[ptr] = 0
                    self.now += size
                    self.peak = max(self.peak, self.now)
                self.refs[ptr] += 1
                weakref.finalize(t, self._release, ptr, size)
            yield name, t

    def _release(self, ptr: int, size: int) -> None:
        self.refs[ptr] -= 1
        if not self.refs[ptr]:
            del self.refs[ptr]
            self.now -= size


def refit_weights(policy, engine, *, bucket_bytes: int) -> dict[str, float]:  # noqa: ANN001
    """Stream the policy's HF-named full tensors into `engine`; refit metrics with the peak extra
    memory the stream held (`refit_peak_extra_mb`, see `ExtraBytes`)."""
    model = getattr(policy, "model", None)
    extra = ExtraBytes(model.parameters() if model is not None else ())
    stats = engine.load_weights(extra.watch(policy.state_dict_for_refit()), bucket_bytes=bucket_bytes)
    return {"refit_seconds": stats.seconds, "refit_buckets": float(stats.buckets), "refit_mb": stats.bytes / 2**20,
            "refit_peak_extra_mb": extra.peak / 2**20}


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
    is a Generator. Returns refit and agreement metrics; raises EngineTrainerMismatch (above)
    unless `threshold` is None (engine replicas check the worst replica's metrics instead)."""
    refit = refit_weights(policy, engine, bucket_bytes=bucket_bytes)
    prompts, responses = probe.to_lists()
    engine_lp = torch.zeros(probe.response_ids.shape, dtype=torch.float32)
    for i, scores in enumerate(engine.score(prompts, responses)):
        engine_lp[i, : len(scores)] = torch.tensor(scores)
    trainer_lp = policy.compute_logprobs(probe, temperature=1.0)
    metrics = agreement(engine_lp, trainer_lp, probe.response_mask) | refit
    check_agreement(metrics, threshold)
    return metrics
