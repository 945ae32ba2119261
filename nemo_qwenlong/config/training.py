"""Schema sections for the model, parallel layout, SFT and the RL algorithm.

Defaults are the released QwenLong-L1 DAPO demo settings (qwenlong-l1-spec.md §4, §7) unless a
description says otherwise. Settings the paper leaves unknown (spec §11) carry our choice and say so.
"""

from __future__ import annotations

from typing import Literal

from pydantic import field_validator, model_validator

from nemo_qwenlong.config.base import Section, field, section


class TinyArch(Section):
    """Geometry of the tiny random Qwen2 used by tests and the CPU default (vLLM CPU needs head_dim >= 32)."""

    vocab_size: int = field(512, "vocabulary size", ge=16, le=1_000_000)
    hidden_size: int = field(128, "model width", ge=8, le=65_536)
    intermediate_size: int = field(256, "SwiGLU FFN width", ge=8, le=262_144)
    num_hidden_layers: int = field(2, "transformer layers", ge=1, le=256)
    num_attention_heads: int = field(4, "query heads", ge=1, le=512)
    num_key_value_heads: int = field(2, "key/value heads (GQA groups)", ge=1, le=512)
    max_position_embeddings: int = field(4096, "positions the RoPE table covers", ge=16, le=1_048_576)
    rope_theta: float = field(1_000_000.0, "RoPE base", gt=0)
    rms_norm_eps: float = field(1e-6, "RMSNorm epsilon", gt=0, lt=1)
    tie_word_embeddings: bool = field(False, "share input embedding and output layer")

    @model_validator(mode="after")
    def _heads_divide(self) -> "TinyArch":
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"model.tiny.hidden_size={self.hidden_size} must be a multiple of "
                f"model.tiny.num_attention_heads={self.num_attention_heads}"
            )
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"model.tiny.num_attention_heads={self.num_attention_heads} must be a multiple of "
                f"model.tiny.num_key_value_heads={self.num_key_value_heads}"
            )
        return self


class YarnConfig(Section):
    """YaRN rope scaling for the whole run: the trainer, the rollout engine and the exports all use it.
    Needed when a stage's input + output exceeds the model's 131,072 positions (the 3-stage recipes'
    120K + 50K); 70K training needs none."""

    factor: float = field(4.0, "context extension factor over the original (4 for 128K, 6 for 192K)", gt=1, le=64)
    original_max_position_embeddings: int = field(32768, "context the base model was trained at", ge=1024)


class ModelConfig(Section):
    """The policy model: where its weights come from and how they are held."""

    source: Literal["hf", "megatron", "tiny-random"] = field(
        "tiny-random",
        "weights from an HF folder, a Megatron checkpoint, or a tiny random Qwen2 built from model.tiny "
        "(the default, so a config that names no model never reaches for a hub)",
    )
    path: str | None = field(None, "HF folder (source=hf) or Megatron checkpoint folder (source=megatron)")
    dtype: Literal["float32", "bfloat16", "float16"] = field("bfloat16", "parameter/compute dtype")
    yarn: YarnConfig | None = field(None, "YaRN for training, rollouts and exports; null keeps plain RoPE")
    geometry: Literal["deepseek-r1-distill-qwen-1.5b", "deepseek-r1-distill-qwen-7b", "deepseek-r1-distill-qwen-14b",
                      "deepseek-r1-distill-qwen-32b", "qwenlong-l1-32b"] | None = field(
        None, "shape of a known model, for `plan` and the GPU layout check when model.path is not on this machine "
        "or not named after the model (a previous stage's export); null: model.tiny or the folder name (docs/plan.md)")
    tiny: TinyArch = section(TinyArch, "geometry used when source=tiny-random")

    @model_validator(mode="after")
    def _path_when_needed(self) -> "ModelConfig":
        if self.source in ("hf", "megatron") and not self.path:
            raise ValueError(f"model.path is required when model.source='{self.source}' (got null)")
        return self


# Context-parallel communication types that work with our parallel init: megatron-core passes the
# value to Transformer Engine's attention (transformer_config.py `cp_comm_type`: "p2p", "all_gather",
# "a2a", "a2a+p2p"). "a2a+p2p" also needs hierarchical CP groups
# (`initialize_model_parallel(hierarchical_context_parallel_sizes=...)`, asserted in
# extensions/transformer_engine.py TEDotProductAttention), which `parallel.init_parallel` does not build.
CP_COMM_TYPES = ("p2p", "all_gather", "a2a")


class ParallelismConfig(Section):
    """Megatron parallel layout. CP, FP8 and the TE spec exist on GPUs only (docs/dependencies.md)."""

    tensor_parallel: int = field(1, "tensor-parallel size (within a node)", ge=1, le=64)
    pipeline_parallel: int = field(1, "pipeline-parallel size", ge=1, le=128)
    context_parallel: int = field(1, "context-parallel size (splits the sequence; needs TE attention)", ge=1, le=64)
    sequence_parallel: bool = field(False, "shard norms/dropout activations along the sequence (needs TP>1)")
    cp_comm_type: Literal["p2p", "all_gather", "a2a"] = field(
        "p2p", "context-parallel attention comm (Transformer Engine's names): p2p ring, all_gather of K/V, a2a")
    transformer_impl: Literal["local", "transformer_engine"] = field(
        "transformer_engine", "layer spec: Transformer Engine (GPU) or megatron-core's local torch spec (CPU)"
    )
    local_attention: Literal["sdpa", "dot_product"] = field(
        "sdpa", "core attention of the local spec (CPU): torch scaled_dot_product_attention (fused, causal, "
        "GQA; never holds the scores) or megatron-core's DotProductAttention ([heads × S × S] scores)")
    sequence_layout: Literal["padded", "packed", "shared_prompt"] = field(
        "padded", "micro-batch layout: padded (rows × the longest row); packed (THD: rows end to end, "
        "attention within each row: TE thd on GPU, row by row with local_attention=sdpa on CPU; "
        "algorithms/packed.py); shared_prompt (each prompt group's prompt runs once, its responses "
        "branch off it: local spec with sdpa only; algorithms/shared_prompt.py)")
    fp8: Literal["tensorwise", "delayed", "blockwise"] | None = field(
        None, "FP8 recipe through Transformer Engine; null trains in model.dtype (blockwise needs Hopper)"
    )
    distributed_optimizer: bool = field(True, "shard optimizer state over data-parallel ranks (GPU only)")
    recompute: Literal["none", "selective", "full"] = field(
        "none", "activation recompute: none; selective (core attention: pays off only with the local spec's "
        "[S×S] scores, not TE flash attention); full (every layer; what a 32B layout on 80 GB GPUs needs, "
        "docs/megatron.md)")
    dist_backend: Literal["nccl", "gloo"] = field("nccl", "torch.distributed backend (gloo on CPU)")

    @field_validator("cp_comm_type", mode="before")
    @classmethod
    def _cp_comm_type(cls, value: object) -> object:
        if value in CP_COMM_TYPES:
            return value
        hint = {"allgather": " (Transformer Engine rejects 'allgather': its name is 'all_gather')",
                "a2a+p2p": " ('a2a+p2p' needs hierarchical context-parallel groups, which parallel init does "
                           "not build)"}.get(str(value), "")
        raise ValueError(f"parallelism.cp_comm_type={value!r} is not accepted; use one of {CP_COMM_TYPES}{hint}")

    @model_validator(mode="after")
    def _gpu_only_features(self) -> "ParallelismConfig":
        te = self.transformer_impl == "transformer_engine"
        if self.context_parallel > 1 and not te:
            raise ValueError(
                f"parallelism.context_parallel={self.context_parallel} needs "
                "parallelism.transformer_impl='transformer_engine' (megatron-core has CP only in TE attention)"
            )
        if self.fp8 is not None and not te:
            raise ValueError(f"parallelism.fp8='{self.fp8}' needs parallelism.transformer_impl='transformer_engine'")
        if self.sequence_parallel and self.tensor_parallel == 1:
            raise ValueError("parallelism.sequence_parallel=true needs parallelism.tensor_parallel > 1")
        if self.sequence_layout == "packed" and not te and self.local_attention != "sdpa":
            raise ValueError(
                "parallelism.sequence_layout='packed' needs parallelism.transformer_impl='transformer_engine' or "
                f"local_attention='sdpa' (megatron's DotProductAttention has no packed path), got "
                f"local_attention='{self.local_attention}'")
        # `packed` takes every CP_COMM_TYPES value: TE 2.20's all-gather and a2a CP attention take THD
        # (context_parallel.py AttnFuncWithCPAndKVAllGather / AttnFuncWithCPAndQKVOA2A; docs/megatron.md).
        if self.sequence_layout == "shared_prompt" and (te or self.local_attention != "sdpa"):
            raise ValueError(
                "parallelism.sequence_layout='shared_prompt' needs transformer_impl='local' with "
                "local_attention='sdpa' (its branch-over-trunk attention is an SDPA mask; Transformer Engine "
                f"attention takes no such mask), got transformer_impl='{self.transformer_impl}', "
                f"local_attention='{self.local_attention}'; use 'packed' on GPUs")
        if self.sequence_parallel and not te:
            raise ValueError(
                "parallelism.sequence_parallel=true needs parallelism.transformer_impl='transformer_engine' "
                "(megatron-core's local-spec norm rejects sequence parallel)"
            )
        return self


class OptimConfig(Section):
    """AdamW with gradient clipping and a warm-up + constant/cosine schedule."""

    lr: float = field(2e-6, "peak learning rate (released RL demo: constant 2e-6)", gt=0, le=1.0)
    min_lr: float = field(0.0, "floor of the cosine schedule", ge=0)
    schedule: Literal["constant", "cosine"] = field("constant", "learning-rate schedule after warm-up")
    warmup_steps: int = field(0, "linear warm-up optimiser steps", ge=0)
    weight_decay: float = field(0.01, "AdamW decoupled weight decay", ge=0, le=1)
    beta1: float = field(0.9, "AdamW beta1", ge=0, lt=1)
    beta2: float = field(0.999, "AdamW beta2", ge=0, lt=1)
    eps: float = field(1e-8, "AdamW epsilon", gt=0)
    grad_clip: float = field(1.0, "max global gradient norm; 0 disables clipping", ge=0)
    nonfinite_grad: Literal["skip", "error"] = field(
        "skip", "a NaN/inf global gradient norm (bf16 has no loss scaler to catch it): skip the update and "
        "count it (metric skipped_steps), or stop with an error")


def _sft_optim() -> OptimConfig:
    # Warm-up SFT hyper-parameters are not public (spec §11.2); our choice, documented in docs/recipes.md.
    return OptimConfig(lr=1e-5, min_lr=1e-6, schedule="cosine", warmup_steps=20)


class SFTConfig(Section):
    """Warm-up SFT on long-document reasoning traces (data and settings unpublished: spec §11.2)."""

    train_path: str | None = field(None, "SFT data (JSONL of prompt/response or chat messages)")
    max_seq_len: int = field(32768, "longest packed sequence, prompt + response", ge=16, le=1_048_576)
    epochs: int = field(1, "passes over the SFT data", ge=1, le=100)
    global_batch_size: int = field(64, "sequences per optimiser step", ge=1)
    micro_batch_tokens: int = field(
        32768, "token budget of one micro-batch per data-parallel rank: rows × padded longest row", ge=16
    )
    max_steps: int | None = field(None, "stop after this many optimiser steps (null: `epochs` passes)", ge=1)
    val_path: str | None = field(None, "SFT validation set (same layout); null holds out `val_fraction` of train_path")
    val_fraction: float = field(0.05, "share of the SFT data held out for the validation loss when val_path is null",
                                ge=0, lt=1)
    val_every_steps: int = field(20, "validation loss every N optimiser steps (and at the end)", ge=1)
    optim: OptimConfig = section(_sft_optim, "SFT optimiser")


class DynamicSamplingConfig(Section):
    """DAPO dynamic sampling: drop groups whose unshaped correctness is all-equal (spec §4.4)."""

    enable: bool = field(True, "filter all-correct / all-wrong groups and regenerate")
    max_rounds: int = field(10, "generation rounds before giving up on a full batch", ge=1, le=1000)
    on_exhausted: Literal["error", "partial"] = field(
        "error", "after max_rounds: stop with an error (released behaviour) or train on the partial batch"
    )


class OverlongConfig(Section):
    """DAPO soft overlong punishment over the last `buffer` tokens of the output cap (spec §3.4)."""

    enable: bool = field(True, "add the length penalty to the reward")
    buffer: int = field(1000, "tokens before the cap where the penalty ramps from 0 to -factor", ge=1)
    factor: float = field(1.0, "penalty at the cap", ge=0)


class AepoConfig(Section):
    """QwenLong-L1.5 AEPO: while the policy entropy is high, update on positive samples only (docs/algorithms.md#aepo)."""

    enable: bool = field(False, "mask the samples without a positive advantage and reward while the entropy is high")
    mode: Literal["hysteresis", "band"] = field(
        "hysteresis", "hysteresis (paper): start masking above entropy_high, stop below entropy_low; "
        "band (released snippet): mask while entropy_low < entropy < entropy_high")
    entropy: Literal["batch", "previous_update"] = field(
        "batch", "the entropy the rule reads: batch (this step's training batch before its update, as the released "
        "trainer's old-log-prob pass measures it; one no-grad forward unless that pass runs anyway) or "
        "previous_update (the last step's update entropy, over the samples it used; no extra forward)")
    entropy_low: float | None = field(None, "lower entropy threshold (nats per token); required when enabled", ge=0)
    entropy_high: float | None = field(None, "upper entropy threshold (nats per token); required when enabled", ge=0)

    @model_validator(mode="after")
    def _thresholds(self) -> "AepoConfig":
        if not self.enable:
            return self
        if self.entropy_low is None or self.entropy_high is None:
            raise ValueError(f"rl.aepo.enable=true needs rl.aepo.entropy_low and rl.aepo.entropy_high, got "
                             f"{self.entropy_low} and {self.entropy_high}")
        if self.entropy_low >= self.entropy_high:
            raise ValueError(f"rl.aepo.entropy_low={self.entropy_low} must be below "
                             f"rl.aepo.entropy_high={self.entropy_high}")
        return self


class RLConfig(Section):
    """GRPO/DAPO policy optimisation (spec §4). Defaults: the released DAPO demo."""

    advantage_estimator: Literal["grpo", "rloo"] = field("grpo", "advantage estimator, by name")
    std_normalize: bool = field(True, "grpo: divide by the unbiased group std (false: mean-only)")
    adv_eps: float = field(1e-6, "grpo: epsilon added to the group std", gt=0)
    advantage_std: Literal["group", "task"] = field(
        "group", "grpo: divide by the group's reward std, or by the std over every sample of the same task in "
        "the training batch (QwenLong-L1.5; tasks as curriculum.task_balance.key defines them)")
    loss_level: Literal["token", "sequence"] = field(
        "token", "token: sum over tokens / global token count (DAPO); sequence: per-sequence mean (GRPO)"
    )
    clip_low: float = field(0.2, "lower clip epsilon: ratio >= 1 - clip_low", ge=0, le=1)
    clip_high: float = field(0.2, "upper clip epsilon (DAPO clip-higher uses 0.28)", ge=0, le=1)
    dual_clip: float | None = field(None, "dual-clip bound c > 1 for negative advantages; null disables", gt=1)
    kl_coef: float = field(0.0, "KL penalty to the reference policy; 0 never runs the reference", ge=0)
    kl_estimator: Literal["k1", "k3"] = field("k3", "KL estimator (k3 = verl low_var_kl)")
    entropy_coef: float = field(0.001, "entropy bonus coefficient", ge=0)
    group_size: int = field(8, "responses sampled per prompt (G)", ge=1, le=1024)
    train_batch_size: int = field(128, "prompts per RL step after filtering", ge=1)
    gen_batch_size: int = field(384, "prompts per generation round", ge=1)
    mini_batch_size: int = field(32, "prompts per optimiser step (train_batch_size / mini_batch_size steps)", ge=1)
    epochs_per_batch: int = field(1, "passes over each RL batch (ppo_epochs)", ge=1, le=16)
    micro_batch_tokens: int = field(
        80000, "token budget of one micro-batch per data-parallel rank: rows × padded longest row", ge=16
    )
    logprob_chunk_tokens: int = field(4096, "sequence chunk for log-prob/entropy (bounds the vocab activation)", ge=1)
    logprob_impl: Literal["fused", "logits"] = field(
        "fused", "fused: log-probs/entropy from the final hidden states and the output weight chunk by chunk, "
        "each chunk's logits recomputed in backward (never holds [tokens × vocab/TP] logits or their gradient); "
        "logits: the output layer's full logits, then chunked log-probs")
    optim: OptimConfig = section(OptimConfig, "RL optimiser")
    dynamic_sampling: DynamicSamplingConfig = section(DynamicSamplingConfig, "dynamic sampling")
    overlong: OverlongConfig = section(OverlongConfig, "overlong reward shaping")
    aepo: AepoConfig = section(AepoConfig, "QwenLong-L1.5 adaptive entropy-controlled policy optimisation")

    @model_validator(mode="after")
    def _batch_shapes(self) -> "RLConfig":
        if self.train_batch_size % self.mini_batch_size:
            raise ValueError(
                f"rl.train_batch_size={self.train_batch_size} must be a multiple of "
                f"rl.mini_batch_size={self.mini_batch_size}"
            )
        if self.gen_batch_size < self.train_batch_size and not self.dynamic_sampling.enable:
            raise ValueError(
                f"rl.gen_batch_size={self.gen_batch_size} is below rl.train_batch_size={self.train_batch_size} "
                "and rl.dynamic_sampling.enable=false: one round could never fill a batch"
            )
        if self.advantage_std == "task" and self.advantage_estimator != "grpo":
            raise ValueError(f"rl.advantage_std=task needs rl.advantage_estimator=grpo, got "
                             f"{self.advantage_estimator!r}")
        return self
