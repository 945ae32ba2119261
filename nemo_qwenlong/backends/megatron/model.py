"""Build a megatron-core GPTModel for a Qwen2 checkpoint from its HF `config.json`.

GQA, QKV bias, SwiGLU, RMSNorm, RoPE (base from the config), tied or untied embeddings. Layer spec:
Transformer Engine on GPUs (`transformer_impl: transformer_engine`), megatron-core's local torch
spec on CPU, whose core attention is torch SDPA (`local_attention: sdpa`, sdpa_attention.py) or
megatron's own DotProductAttention (`dot_product`, which holds [heads × S × S] scores).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from nemo_qwenlong.backends.hf.checkpoint import rope_scaling, rope_theta
from nemo_qwenlong.backends.megatron import cpu_compat

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


FP8_RECIPES = ("tensorwise", "delayed", "blockwise")
LOCAL_ATTENTION = ("sdpa", "dot_product")


def transformer_config(hf: dict, *, tensor_parallel: int = 1, pipeline_parallel: int = 1, context_parallel: int = 1,
                       sequence_parallel: bool = False, dtype: str = "float32", fp8: str | None = None,
                       recompute: str = "none", cp_comm_type: str = "p2p"):
    """megatron-core TransformerConfig for a Qwen2 HF config plus the run's layout and GPU features.

    `fp8` names a Transformer Engine recipe (hybrid format: E4M3 forward, E5M2 gradients);
    `recompute` is none / selective (core attention) / full (every layer, uniform);
    `calculate_per_token_loss` keeps Megatron's DDP from dividing gradients by the data-parallel
    size, because our loss is already normalised by the global token count (algorithms.losses).
    """
    from megatron.core.transformer.transformer_config import TransformerConfig

    if fp8 is not None and fp8 not in FP8_RECIPES:
        raise ValueError(f"fp8 recipe {fp8!r} is not one of {FP8_RECIPES}")
    heads = hf["num_attention_heads"]
    params_dtype = DTYPES[dtype]
    gpu_features = {}
    if fp8:
        gpu_features.update(fp8="hybrid", fp8_recipe=fp8)
    if recompute == "selective":
        gpu_features.update(recompute_granularity="selective")
    elif recompute == "full":
        gpu_features.update(recompute_granularity="full", recompute_method="uniform", recompute_num_layers=1)
    if context_parallel > 1:
        gpu_features.update(cp_comm_type=cp_comm_type)
    return TransformerConfig(
        num_layers=hf["num_hidden_layers"], hidden_size=hf["hidden_size"], ffn_hidden_size=hf["intermediate_size"],
        num_attention_heads=heads, num_query_groups=hf.get("num_key_value_heads", heads),
        kv_channels=hf.get("head_dim") or hf["hidden_size"] // heads,
        normalization="RMSNorm", layernorm_epsilon=hf.get("rms_norm_eps", 1e-6),
        gated_linear_unit=True, activation_func=F.silu, add_bias_linear=False, add_qkv_bias=True,
        hidden_dropout=0.0, attention_dropout=0.0,
        tensor_model_parallel_size=tensor_parallel, pipeline_model_parallel_size=pipeline_parallel,
        context_parallel_size=context_parallel, sequence_parallel=sequence_parallel,
        params_dtype=params_dtype, bf16=params_dtype == torch.bfloat16, fp16=params_dtype == torch.float16,
        use_cpu_initialization=not torch.cuda.is_available(), calculate_per_token_loss=True,
        **gpu_features,
    )


def local_layer_spec(local_attention: str | None = None):
    """megatron-core's local GPT layer spec with the chosen core attention (None: the schema's
    `parallelism.local_attention` default). Neither attention has parameters, so checkpoints are
    the same either way."""
    from megatron.core.models.gpt import gpt_layer_specs as specs

    from nemo_qwenlong.config.training import ParallelismConfig

    choice = local_attention or ParallelismConfig.model_fields["local_attention"].default
    if choice not in LOCAL_ATTENTION:
        raise ValueError(f"local_attention={choice!r} is not one of {LOCAL_ATTENTION}")
    spec = specs.get_gpt_layer_local_spec(normalization="RMSNorm")
    if choice == "sdpa":
        from nemo_qwenlong.backends.megatron.sdpa_attention import SDPAttention

        spec.submodules.self_attention.submodules.core_attention = SDPAttention
    return spec


def yarn_fields(scaling: dict | None) -> dict[str, Any]:
    """megatron-core's YarnRotaryEmbedding fields for an HF YaRN rope_scaling (none for plain RoPE).
    mscale 1 / mscale_all_dim 0 give HF's attention factor 0.1·ln(factor) + 1; HF truncates the
    correction range by default (`truncate`), as `correction_range_round_to_int` does."""
    if not scaling or (scaling.get("rope_type") or scaling.get("type")) != "yarn":
        return {}
    return {"position_embedding_type": "yarn", "yarn_rotary_scaling_factor": float(scaling["factor"]),
            "yarn_original_max_position_embeddings": int(scaling["original_max_position_embeddings"]),
            "yarn_beta_fast": float(scaling.get("beta_fast", 32.0)),
            "yarn_beta_slow": float(scaling.get("beta_slow", 1.0)),
            "yarn_mscale": 1.0, "yarn_mscale_all_dim": 0.0,
            "yarn_correction_range_round_to_int": bool(scaling.get("truncate", True))}


def build_gpt_model(hf: dict, *, transformer_impl: str = "local", local_attention: str | None = None,
                    padded_vocab_size: int | None = None, **parallel):
    """A GPTModel with the checkpoint's geometry (random weights; load them with qwen2_mapping).
    `local_attention` picks the local spec's core attention (None: the schema default);
    `padded_vocab_size` gives the embedding/output rows when the vocabulary was padded for TP."""
    from megatron.core.models.gpt import GPTModel
    from megatron.core.models.gpt import gpt_layer_specs as specs

    cpu_compat.apply()
    scaling = rope_scaling(hf)
    yarn = yarn_fields(scaling)
    if scaling and not yarn:
        raise ValueError(f"the model config carries rope scaling {scaling}; training supports plain RoPE or YaRN "
                         "(rope_type 'yarn'): import the checkpoint without it or set model.yarn")
    cfg = transformer_config(hf, **parallel)
    for name, value in yarn.items():  # GPTModel and its attention read the yarn_* fields off the config
        if name.startswith("yarn_"):
            setattr(cfg, name, value)
    if transformer_impl == "transformer_engine":
        spec = specs.get_gpt_layer_with_transformer_engine_spec()
    else:
        spec = local_layer_spec(local_attention)
    return GPTModel(
        cfg, spec, vocab_size=padded_vocab_size or hf["vocab_size"], max_sequence_length=hf.get("max_position_embeddings", 32768),
        position_embedding_type=yarn.get("position_embedding_type", "rope"), rotary_base=int(rope_theta(hf)),
        share_embeddings_and_output_weights=bool(hf.get("tie_word_embeddings", False)),
    )
