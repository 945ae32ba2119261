"""RL algorithm core (pure torch): batch contract, advantages, policy loss, shaping, dynamic sampling.

Nothing here imports megatron, vllm or transformer_engine.
"""

from nemo_qwenlong.algorithms.advantages import ESTIMATORS, compute_advantages, grpo_advantages, rloo_advantages
from nemo_qwenlong.algorithms.batch import BatchContractError, RolloutBatch, pad_sequences
from nemo_qwenlong.algorithms.dynamic_sampling import (
    DynamicSamplingExhausted,
    DynamicSamplingStats,
    GroupAccumulator,
    collect_groups,
    mixed_groups,
)
from nemo_qwenlong.algorithms.losses import count_sequences, count_tokens, kl_penalty, policy_loss
from nemo_qwenlong.algorithms.shaping import overlong_penalty

__all__ = [
    "ESTIMATORS",
    "BatchContractError",
    "DynamicSamplingExhausted",
    "DynamicSamplingStats",
    "GroupAccumulator",
    "RolloutBatch",
    "collect_groups",
    "compute_advantages",
    "count_sequences",
    "count_tokens",
    "grpo_advantages",
    "kl_penalty",
    "mixed_groups",
    "overlong_penalty",
    "pad_sequences",
    "policy_loss",
    "rloo_advantages",
]
