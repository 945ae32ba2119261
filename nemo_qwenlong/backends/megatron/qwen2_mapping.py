"""Qwen2 weights between Hugging Face and megatron-core names (full, unsharded tensors). Pure torch.

Fused tensors (checkpoint-layout.md): Megatron's `linear_qkv` holds, per query group, the group's
query heads then its key head then its value head (weights and biases alike); `linear_fc1` is
[gate; up]. Norm names follow megatron-core's local spec here; `TE_NORM_NAMES` gives the
Transformer-Engine-spec names, where the norms are fused into the following linear layer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

TE_NORM_NAMES = {
    "input_layernorm.weight": "self_attention.linear_qkv.layer_norm_weight",
    "pre_mlp_layernorm.weight": "mlp.linear_fc1.layer_norm_weight",
}


@dataclass(frozen=True)
class Qwen2Shape:
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    tie_word_embeddings: bool

    @classmethod
    def from_hf_config(cls, cfg: dict) -> "Qwen2Shape":
        heads = cfg["num_attention_heads"]
        return cls(cfg["num_hidden_layers"], heads, cfg.get("num_key_value_heads", heads),
                   cfg.get("head_dim") or cfg["hidden_size"] // heads, bool(cfg.get("tie_word_embeddings", False)))


def fuse_qkv(q: Tensor, k: Tensor, v: Tensor, shape: Qwen2Shape) -> Tensor:
    """[heads·D, ...], [kv·D, ...], [kv·D, ...] -> [(heads + 2·kv)·D, ...] grouped per KV head."""
    g, d = shape.num_kv_heads, shape.head_dim
    per = shape.num_heads // g
    rest = q.shape[1:]
    q = q.reshape(g, per * d, *rest)
    k = k.reshape(g, d, *rest)
    v = v.reshape(g, d, *rest)
    return torch.cat([q, k, v], dim=1).reshape(-1, *rest)


def split_qkv(qkv: Tensor, shape: Qwen2Shape) -> tuple[Tensor, Tensor, Tensor]:
    """Inverse of `fuse_qkv`."""
    g, d = shape.num_kv_heads, shape.head_dim
    per = shape.num_heads // g
    rest = qkv.shape[1:]
    grouped = qkv.reshape(g, (per + 2) * d, *rest)
    q, k, v = torch.split(grouped, [per * d, d, d], dim=1)
    return q.reshape(-1, *rest), k.reshape(-1, *rest), v.reshape(-1, *rest)


def hf_to_megatron(hf: dict[str, Tensor], shape: Qwen2Shape) -> dict[str, Tensor]:
    """HF Qwen2ForCausalLM state dict -> megatron-core GPTModel (local spec) state dict."""
    out = {"embedding.word_embeddings.weight": hf["model.embed_tokens.weight"],
           "decoder.final_layernorm.weight": hf["model.norm.weight"]}
    if not shape.tie_word_embeddings:
        out["output_layer.weight"] = hf["lm_head.weight"]
    for i in range(shape.num_layers):
        h, m = f"model.layers.{i}.", f"decoder.layers.{i}."
        att = h + "self_attn."
        out[m + "input_layernorm.weight"] = hf[h + "input_layernorm.weight"]
        out[m + "pre_mlp_layernorm.weight"] = hf[h + "post_attention_layernorm.weight"]
        out[m + "self_attention.linear_qkv.weight"] = fuse_qkv(
            hf[att + "q_proj.weight"], hf[att + "k_proj.weight"], hf[att + "v_proj.weight"], shape)
        out[m + "self_attention.linear_qkv.bias"] = fuse_qkv(
            hf[att + "q_proj.bias"], hf[att + "k_proj.bias"], hf[att + "v_proj.bias"], shape)
        out[m + "self_attention.linear_proj.weight"] = hf[att + "o_proj.weight"]
        out[m + "mlp.linear_fc1.weight"] = torch.cat([hf[h + "mlp.gate_proj.weight"], hf[h + "mlp.up_proj.weight"]])
        out[m + "mlp.linear_fc2.weight"] = hf[h + "mlp.down_proj.weight"]
    return out


def megatron_to_hf(mg: dict[str, Tensor], shape: Qwen2Shape) -> dict[str, Tensor]:
    """Inverse of `hf_to_megatron` (accepts local-spec or TE-spec norm names)."""
    mg = {local_spec_name(k): v for k, v in mg.items() if not k.endswith("_extra_state")}
    return dict(iter_megatron_to_hf(mg.__getitem__, shape))


def iter_megatron_to_hf(get: Callable[[str], Tensor], shape: Qwen2Shape) -> Iterator[tuple[str, Tensor]]:
    """(HF name, full tensor) pairs, embeddings first, then layer by layer; `get(local-spec name)` is
    called once per Megatron tensor, when it is needed, so a caller can gather or read lazily."""
    embed = get("embedding.word_embeddings.weight")
    yield "model.embed_tokens.weight", embed
    for i in range(shape.num_layers):
        h, m = f"model.layers.{i}.", f"decoder.layers.{i}."
        att = h + "self_attn."
        yield h + "input_layernorm.weight", get(m + "input_layernorm.weight")
        yield h + "post_attention_layernorm.weight", get(m + "pre_mlp_layernorm.weight")
        for suffix in ("weight", "bias"):
            q, k, v = split_qkv(get(m + f"self_attention.linear_qkv.{suffix}"), shape)
            yield from ((att + f"{p}_proj.{suffix}", t) for p, t in zip("qkv", (q, k, v)))
        yield att + "o_proj.weight", get(m + "self_attention.linear_proj.weight")
        gate, up = torch.chunk(get(m + "mlp.linear_fc1.weight"), 2, dim=0)
        yield h + "mlp.gate_proj.weight", gate
        yield h + "mlp.up_proj.weight", up
        yield h + "mlp.down_proj.weight", get(m + "mlp.linear_fc2.weight")
    yield "model.norm.weight", get("decoder.final_layernorm.weight")
    yield "lm_head.weight", embed if shape.tie_word_embeddings else get("output_layer.weight")


def local_spec_name(name: str) -> str:
    for local, te in TE_NORM_NAMES.items():
        if name.endswith(te):
            return name[: -len(te)] + local
    return name


def shard_for_tp(name: str, full: Tensor, rank: int, size: int, shape: Qwen2Shape) -> Tensor:
    """This tensor-parallel rank's shard of a full megatron-core tensor (checkpoint-layout.md)."""
    if size == 1:
        return full
    if name.endswith("linear_qkv.weight") or name.endswith("linear_qkv.bias"):
        if shape.num_kv_heads % size:
            raise ValueError(f"{shape.num_kv_heads} KV heads cannot be split over tensor_parallel={size}")
        groups = full.reshape(shape.num_kv_heads, -1, *full.shape[1:])
        return torch.chunk(groups, size, dim=0)[rank].reshape(-1, *full.shape[1:])
    if name.endswith("linear_fc1.weight"):
        gate, up = torch.chunk(full, 2, dim=0)
        return torch.cat([torch.chunk(gate, size, dim=0)[rank], torch.chunk(up, size, dim=0)[rank]])
    if name.endswith("linear_proj.weight") or name.endswith("linear_fc2.weight"):
        return torch.chunk(full, size, dim=1)[rank]
    if name in ("embedding.word_embeddings.weight", "output_layer.weight"):
        if full.shape[0] % size:
            raise ValueError(f"vocabulary {full.shape[0]} is not divisible by tensor_parallel={size} (pad it)")
        return torch.chunk(full, size, dim=0)[rank]
    return full  # norms: replicated


def unshard_tp(name: str, shards: list[Tensor], shape: Qwen2Shape) -> Tensor:
    """Inverse of `shard_for_tp` over all ranks' shards."""
    size = len(shards)
    if size == 1:
        return shards[0]
    if name.endswith("linear_qkv.weight") or name.endswith("linear_qkv.bias"):
        per_rank = [s.reshape(shape.num_kv_heads // size, -1, *s.shape[1:]) for s in shards]
        return torch.cat(per_rank, dim=0).reshape(-1, *shards[0].shape[1:])
    if name.endswith("linear_fc1.weight"):
        halves = [torch.chunk(s, 2, dim=0) for s in shards]
        return torch.cat([torch.cat([h[0] for h in halves]), torch.cat([h[1] for h in halves])])
    if name.endswith("linear_proj.weight") or name.endswith("linear_fc2.weight"):
        return torch.cat(shards, dim=1)
    if name in ("embedding.word_embeddings.weight", "output_layer.weight"):
        return torch.cat(shards, dim=0)
    return shards[0]
