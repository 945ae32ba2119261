"""Step-time estimate of one RL step: training FLOPs at a stated MFU, rollout prefill compute-bound,
decode bandwidth-bound. Pure arithmetic; docs/plan.md lists the assumptions.

| quantity | formula | source |
|---|---|---|
| forward FLOPs of a sequence of S | 2·M·S + 2·L·q·S² | 2 FLOPs per weight per token (M: matmul params incl. output layer); causal attention QKᵀ and AV, 4·L·q·S² halved |
| training FLOPs per sequence | (3 + 1 under full recompute)·forward | backward = 2 × forward (Narayanan et al. 2021, §5.1); full recompute re-runs the forward |
| old-log-prob pass | 1·forward per sequence | needed when a batch takes more than one optimiser step (loops/rl.py) |
| training time | FLOPs / (GPUs · peak · MFU) | |
| prompts per replica | p = ⌈prompts / R⌉, R = W / TP_r replicas | groups dealt whole; the fullest replica sets the pace (report.step_times) |
| prefill FLOPs | p·forward(S_in) with prefix caching (one prefill per group), ×G without, on the replica's TP_r GPUs | vLLM automatic prefix caching |
| decode step | max(bytes / (BW·η), 2·M·seqs/TP_r / (peak·MFU_prefill)) | weights/TP_r plus every running sequence's KV read once per token |
| decode time | waves · S_out · step, waves = ⌈p / groups resident⌉ | groups resident = KV capacity / (S_in + G·S_out), shared prompt stored once |
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from nemo_qwenlong.planning.memory import Geometry, kv_bytes_per_token


def forward_flops(g: Geometry, seq_len: int) -> float:
    """Forward FLOPs of one causal sequence of `seq_len` tokens."""
    return 2 * g.matmul_params * seq_len + 2 * g.layers * g.q_dim * seq_len**2


def training_flops(g: Geometry, seq_len: int, *, recompute: str) -> float:
    """Forward + backward FLOPs of one sequence (full recompute adds a forward)."""
    passes = 4 if recompute == "full" else 3
    extra = 2 * g.layers * g.q_dim * seq_len**2 if recompute == "selective" else 0  # core attention again
    return passes * forward_flops(g, seq_len) + extra


@dataclass(frozen=True)
class Decode:
    """How an engine's decode goes: sequences resident at once, waves, and the time."""

    groups_resident: int
    sequences_resident: int
    waves: int
    step_seconds: float
    seconds: float


def decode_estimate(g: Geometry, *, prompts_per_engine: int, group_size: int, input_tokens: int, output_tokens: int,
                    kv_tokens: float, rollout_tp: int, prefix_caching: bool, max_num_seqs: int,
                    weights_per_gpu: float, hbm_bytes_per_s: float, bandwidth_share: float,
                    peak_flops: float, mfu: float) -> Decode:
    """Bandwidth-bound decode of `prompts_per_engine` groups of `group_size` samples on one engine.
    A wave holds as many whole groups as the KV cache and max_num_seqs allow (at least one sequence);
    every token step reads the engine's weights and each resident sequence's whole context."""
    group_tokens = (input_tokens + group_size * output_tokens if prefix_caching
                    else group_size * (input_tokens + output_tokens))
    groups = min(int(kv_tokens // group_tokens), max_num_seqs // group_size, prompts_per_engine)
    if groups >= 1:
        seqs, waves = groups * group_size, math.ceil(prompts_per_engine / groups)
    else:  # not even one group: sequences of it run a few at a time
        seqs = max(1, min(int(kv_tokens // (input_tokens + output_tokens)), group_size))
        waves = prompts_per_engine * math.ceil(group_size / seqs)
    mean_context = input_tokens + output_tokens / 2
    step_bytes = weights_per_gpu + seqs * mean_context * kv_bytes_per_token(g, rollout_tp=rollout_tp)
    step = max(step_bytes / (hbm_bytes_per_s * bandwidth_share),
               2 * g.matmul_params * seqs / rollout_tp / (peak_flops * mfu))
    return Decode(groups, seqs, waves, step, waves * output_tokens * step)
