"""Per-GPU training memory of a Qwen2 layout, estimated from what each layer saves for backward.

Pure arithmetic (no torch, no megatron), used to choose the activation-recompute default and to
document it (docs/megatron.md "Activation recompute"). Bytes per token per layer that a
Transformer Engine layer keeps for backward in bf16 (flash/fused attention, so no [S × S] scores):

    norm inputs 2h, QKV and fc1 inputs (norm outputs) 2h, Q h, K/V 2·kv, attention output h,
    fc1 output (gate + up) 2·ffn, SwiGLU output (fc2 input) ffn          → 6h + 2kv + 3ffn values

- `selective` (megatron: recompute core attention only) keeps Q, K, V as the checkpoint's inputs
  and the output as the projection's input, so with flash attention it saves almost nothing while
  re-running the most expensive kernel (megatron-core warns about this pairing). It pays off only
  when attention materialises [heads × S × S] scores (the local spec).
- `full` (uniform, one layer per checkpoint) keeps each layer's input (h values) plus one layer's
  working set during backward.
Sequence parallel shards everything over TP (without it the norm inputs are replicated); CP
divides the tokens. Static memory: bf16 weights, fp32 gradient buffer (grad_reduce_in_fp32), and
the distributed optimizer's fp32 master + two Adam moments sharded over DP×CP.
"""

from __future__ import annotations

from dataclasses import dataclass

BF16, FP32 = 2, 4
GIB = 2**30


@dataclass(frozen=True)
class Geometry:
    layers: int
    hidden: int
    ffn: int
    kv_dim: int  # num_key_value_heads × head_dim
    params: float  # total parameter count


R1_DISTILL_QWEN_32B = Geometry(layers=64, hidden=5120, ffn=27648, kv_dim=8 * 128, params=32.8e9)


def saved_values_per_token(g: Geometry, recompute: str) -> float:
    """Activation values one layer keeps per token for backward (before TP sharding)."""
    every = 6 * g.hidden + 2 * g.kv_dim + 3 * g.ffn
    if recompute == "none":
        return every
    if recompute == "selective":
        return every - g.hidden  # only the attention output is not kept twice; Q, K, V stay
    if recompute == "full":
        return g.hidden
    raise ValueError(f"recompute={recompute!r} is not one of ('none', 'selective', 'full')")


def activation_bytes(g: Geometry, recompute: str, *, tokens: int, tensor_parallel: int, context_parallel: int) -> float:
    """Activation bytes per GPU for one micro-batch of `tokens` (rows × S) at the given layout
    (sequence parallel on)."""
    per_gpu_tokens = tokens / context_parallel
    kept = saved_values_per_token(g, recompute) * g.layers
    if recompute == "full":  # one layer is re-run with everything kept during its backward
        kept += saved_values_per_token(g, "none")
    return kept * per_gpu_tokens * BF16 / tensor_parallel


def static_bytes(g: Geometry, *, tensor_parallel: int, context_parallel: int, data_parallel: int) -> float:
    """Weights (bf16) + fp32 gradient buffer per GPU + distributed-optimizer state (fp32 master and
    two moments, sharded over DP×CP)."""
    per_tp = g.params / tensor_parallel
    return per_tp * (BF16 + FP32) + 3 * FP32 * per_tp / (data_parallel * context_parallel)


def training_bytes(g: Geometry, recompute: str, *, tokens: int, tensor_parallel: int, context_parallel: int,
                   data_parallel: int) -> float:
    return (static_bytes(g, tensor_parallel=tensor_parallel, context_parallel=context_parallel,
                         data_parallel=data_parallel)
            + activation_bytes(g, recompute, tokens=tokens, tensor_parallel=tensor_parallel,
                               context_parallel=context_parallel))
