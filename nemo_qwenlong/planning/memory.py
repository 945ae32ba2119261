"""Per-GPU memory of a Qwen2 layout: training (what each layer saves for backward, static state,
log-prob temporaries) and the colocated vLLM engine (weights, KV cache). Pure arithmetic.

Used to choose the activation-recompute default (docs/megatron.md "Activation recompute"), by
`nemo-qwenlong plan` and by the config's colocation check (docs/plan.md). Formulas, bytes per GPU
(P parameters, L layers, h hidden, f FFN, q = heads·d, kv = kv_heads·d, V vocabulary):

| quantity | bytes | source |
|---|---|---|
| weights | P·b/(TP·PP), b = 2 (bf16) | one copy per model-parallel rank |
| gradients | 4·P/(TP·PP) | megatron DDP `grad_reduce_in_fp32=True` (backends/megatron/optim.py) |
| optimiser | 12·P/(TP·PP·shards), shards = DP×CP distributed, else 1 | fp32 master + Adam m, v; megatron's distributed optimizer shards over DP with CP |
| activations | saved(r)·L·(T/CP)·2/TP (+ one layer's `none` set under full) | what a TE layer keeps for backward, below; SP on |
| log-probs, train | 2·R·V/TP·2 + 4·c·V/TP·4, R = T/CP (logits) or c (fused) | bf16 logits and their gradient; ~4 fp32 [c × V/TP] chunk tensors (algorithms/logprobs.py backward) |
| log-probs, no grad | R·V/TP·2 + 3·c·V/TP·4 + one layer's `none` set | the old-log-prob pass: forward only |
| vLLM weights | P·2/TP_r | the engine's own copy |
| KV cache / token | 2·L·max(1, kv_heads/TP_r)·d·2 | K and V, bf16, kv heads split (or replicated) over TP_r |

Saved values per token per layer (`none`), flash/fused attention so no [S × S] scores:
norm inputs 2h, QKV and fc1 inputs (norm outputs) 2h, Q h, K/V 2·kv, attention output h,
fc1 output (gate + up) 2·ffn, SwiGLU output (fc2 input) ffn → 6h + 2kv + 3ffn values.

- `selective` (megatron: recompute core attention only) keeps Q, K, V as the checkpoint's inputs
  and the output as the projection's input, so with flash attention it saves almost nothing while
  re-running the most expensive kernel (megatron-core warns about this pairing). It pays off only
  when attention materialises [heads × S × S] scores (the local spec).
- `full` (uniform, one layer per checkpoint) keeps each layer's input (h values) plus one layer's
  working set during backward.
Sequence parallel shards everything over TP (without it the norm inputs are replicated); CP
divides the tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

BF16, FP32 = 2, 4
GIB = 2**30
RECOMPUTE = ("none", "selective", "full")


@dataclass(frozen=True)
class Geometry:
    """A Qwen2 model's shape (QKV bias, SwiGLU, RMSNorm)."""

    layers: int
    hidden: int
    ffn: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool = False

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:  # num_key_value_heads × head_dim
        return self.kv_heads * self.head_dim

    @property
    def layer_matmul_params(self) -> int:
        """QKV, output projection, gate/up and down projections of one layer."""
        return self.hidden * (self.q_dim + 2 * self.kv_dim) + self.q_dim * self.hidden + 3 * self.hidden * self.ffn

    @property
    def params(self) -> int:
        """Total parameter count: layers (matmuls, QKV bias, two norms), embedding, output layer, final norm."""
        per_layer = self.layer_matmul_params + (self.q_dim + 2 * self.kv_dim) + 2 * self.hidden
        return self.layers * per_layer + self.vocab * self.hidden * (1 if self.tied else 2) + self.hidden

    @property
    def matmul_params(self) -> int:
        """Parameters that cost 2 FLOPs per token forward: every layer's matmuls and the output layer."""
        return self.layers * self.layer_matmul_params + self.vocab * self.hidden


R1_DISTILL_QWEN_32B = Geometry(layers=64, hidden=5120, ffn=27648, heads=40, kv_heads=8, head_dim=128, vocab=152064)


def saved_values_per_token(g: Geometry, recompute: str) -> float:
    """Activation values one layer keeps per token for backward (before TP sharding)."""
    every = 6 * g.hidden + 2 * g.kv_dim + 3 * g.ffn
    if recompute == "none":
        return every
    if recompute == "selective":
        return every - g.hidden  # only the attention output is not kept twice; Q, K, V stay
    if recompute == "full":
        return g.hidden
    raise ValueError(f"recompute={recompute!r} is not one of {RECOMPUTE}")


def activation_bytes(g: Geometry, recompute: str, *, tokens: int, tensor_parallel: int, context_parallel: int) -> float:
    """Activation bytes per GPU for one micro-batch of `tokens` (rows × S) at the given layout
    (sequence parallel on)."""
    per_gpu_tokens = tokens / context_parallel
    kept = saved_values_per_token(g, recompute) * g.layers
    if recompute == "full":  # one layer is re-run with everything kept during its backward
        kept += saved_values_per_token(g, "none")
    return kept * per_gpu_tokens * BF16 / tensor_parallel


def weight_bytes(g: Geometry, *, model_parallel: int, param_bytes: int = BF16) -> float:
    """The model's weights on one rank (model_parallel = TP·PP)."""
    return g.params * param_bytes / model_parallel


def gradient_bytes(g: Geometry, *, model_parallel: int) -> float:
    """Megatron DDP's fp32 gradient buffer (grad_reduce_in_fp32)."""
    return g.params * FP32 / model_parallel


def master_bytes(g: Geometry, *, model_parallel: int, optimizer_shards: int) -> float:
    """fp32 master weights; they stay on the GPU while the Adam moments go to host for rollouts."""
    return g.params * FP32 / model_parallel / optimizer_shards


def optimizer_bytes(g: Geometry, *, model_parallel: int, optimizer_shards: int) -> float:
    """fp32 master + Adam's two moments, sharded over `optimizer_shards` (DP×CP distributed, else 1)."""
    return 3 * master_bytes(g, model_parallel=model_parallel, optimizer_shards=optimizer_shards)


def static_bytes(g: Geometry, *, tensor_parallel: int, context_parallel: int, data_parallel: int,
                 distributed_optimizer: bool = True) -> float:
    """Weights (bf16) + fp32 gradient buffer per GPU + optimizer state (fp32 master and two moments,
    sharded over DP×CP by the distributed optimizer)."""
    shards = data_parallel * context_parallel if distributed_optimizer else 1
    return (weight_bytes(g, model_parallel=tensor_parallel) + gradient_bytes(g, model_parallel=tensor_parallel)
            + optimizer_bytes(g, model_parallel=tensor_parallel, optimizer_shards=shards))


def training_bytes(g: Geometry, recompute: str, *, tokens: int, tensor_parallel: int, context_parallel: int,
                   data_parallel: int, distributed_optimizer: bool = True) -> float:
    return (static_bytes(g, tensor_parallel=tensor_parallel, context_parallel=context_parallel,
                         data_parallel=data_parallel, distributed_optimizer=distributed_optimizer)
            + activation_bytes(g, recompute, tokens=tokens, tensor_parallel=tensor_parallel,
                               context_parallel=context_parallel))


def logprob_bytes(g: Geometry, *, tokens: int, chunk: int, tensor_parallel: int, context_parallel: int,
                  backward: bool, full_logits: bool = True) -> float:
    """Log-prob temporaries per GPU for one micro-batch: the bf16 vocab-parallel logits (and, with
    `backward`, their gradient) plus the fp32 chunk tensors; without backward also one layer's
    forward working set (the old-log-prob pass keeps nothing else). `full_logits` False: the fused
    path (rl.logprob_impl=fused) holds one chunk's bf16 logits instead of all of them."""
    local_vocab = g.vocab / tensor_parallel
    rows = tokens / context_parallel
    chunk_rows = min(chunk, rows)
    logit_rows = rows if full_logits else chunk_rows
    if backward:
        return 2 * logit_rows * local_vocab * BF16 + 4 * chunk_rows * local_vocab * FP32
    one_layer = saved_values_per_token(g, "none") * rows * BF16 / tensor_parallel
    return logit_rows * local_vocab * BF16 + 3 * chunk_rows * local_vocab * FP32 + one_layer


def kv_bytes_per_token(g: Geometry, *, rollout_tp: int) -> float:
    """K and V (bf16) of one token on one engine GPU: kv heads split over TP_r, replicated beyond."""
    heads_here = max(1.0, g.kv_heads / rollout_tp)
    return 2 * g.layers * heads_here * g.head_dim * BF16


def engine_overhead_bytes(g: Geometry, *, rollout_tp: int, batched_tokens: int, graph_reserve: float) -> float:
    """vLLM's non-KV, non-weight memory on one GPU: the activations of one scheduler step of
    `batched_tokens` (residual and norm 4h, gate/up 2f/TP_r, QKV (q + 2kv)/TP_r values, bf16) plus
    a fixed reserve for CUDA graphs and the sampler."""
    per_token = 4 * g.hidden + (2 * g.ffn + g.q_dim + 2 * g.kv_dim) / rollout_tp
    return batched_tokens * per_token * BF16 + graph_reserve
