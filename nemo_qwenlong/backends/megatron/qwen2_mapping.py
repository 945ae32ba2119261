"""Qwen2 weights between Hugging Face and megatron-core: one declarative table. Pure torch.

Each `Entry` names a megatron-core tensor (local-spec name, `{i}` = layer), the HF tensors it is
built from, how they combine, and how tensor parallelism splits it (checkpoint-layout.md):

| combine | megatron tensor from HF tensors                                                 |
|---------|---------------------------------------------------------------------------------|
| copy    | the one HF tensor                                                               |
| qkv     | per query group g: [q heads of g; k_g; v_g] (weights and biases alike)           |
| cat     | [gate; up]                                                                      |

| tp         | rank r of T holds                                                             |
|------------|-------------------------------------------------------------------------------|
| replicated | everything (norms)                                                            |
| qkv        | query groups r·G/T … (r+1)·G/T − 1                                            |
| gate_up    | [gate rows of r; up rows of r]                                                |
| cols       | input columns of r (`linear_proj`, `linear_fc2`)                              |
| vocab      | vocabulary rows of r, after padding the vocabulary to `padded_vocab_size`     |

Norm names: the local spec has `input_layernorm` / `pre_mlp_layernorm`; the Transformer Engine
spec (and every torch_dist checkpoint, whichever spec wrote it) fuses them into the next linear
layer as `layer_norm_weight` (`TE_NORM_NAMES`). `output_layer.weight` exists only when the
embeddings are untied.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

TE_NORM_NAMES = {
    "input_layernorm.weight": "self_attention.linear_qkv.layer_norm_weight",
    "pre_mlp_layernorm.weight": "mlp.linear_fc1.layer_norm_weight",
}


@dataclass(frozen=True)
class Entry:
    megatron: str
    hf: tuple[str, ...]
    combine: Literal["copy", "qkv", "cat"]
    tp: Literal["replicated", "qkv", "gate_up", "cols", "vocab"]

    def at(self, layer: int | None) -> tuple[str, tuple[str, ...]]:
        """(megatron name, HF names) with the layer filled in."""
        if layer is None:
            return self.megatron, self.hf
        return self.megatron.format(i=layer), tuple(h.format(i=layer) for h in self.hf)


_L, _H = "decoder.layers.{i}.", "model.layers.{i}."
EMBEDDING = Entry("embedding.word_embeddings.weight", ("model.embed_tokens.weight",), "copy", "vocab")
LAYER = (
    Entry(_L + "input_layernorm.weight", (_H + "input_layernorm.weight",), "copy", "replicated"),
    Entry(_L + "self_attention.linear_qkv.weight", tuple(_H + f"self_attn.{p}_proj.weight" for p in "qkv"), "qkv", "qkv"),
    Entry(_L + "self_attention.linear_qkv.bias", tuple(_H + f"self_attn.{p}_proj.bias" for p in "qkv"), "qkv", "qkv"),
    Entry(_L + "self_attention.linear_proj.weight", (_H + "self_attn.o_proj.weight",), "copy", "cols"),
    Entry(_L + "pre_mlp_layernorm.weight", (_H + "post_attention_layernorm.weight",), "copy", "replicated"),
    Entry(_L + "mlp.linear_fc1.weight", (_H + "mlp.gate_proj.weight", _H + "mlp.up_proj.weight"), "cat", "gate_up"),
    Entry(_L + "mlp.linear_fc2.weight", (_H + "mlp.down_proj.weight",), "copy", "cols"),
)
FINAL_NORM = Entry("decoder.final_layernorm.weight", ("model.norm.weight",), "copy", "replicated")
OUTPUT = Entry("output_layer.weight", ("lm_head.weight",), "copy", "vocab")


@dataclass(frozen=True)
class Qwen2Shape:
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    tie_word_embeddings: bool
    vocab_size: int | None = None
    padded_vocab_size: int | None = None  # megatron rows; None = vocab_size (no padding)

    @classmethod
    def from_hf_config(cls, cfg: dict, padded_vocab_size: int | None = None) -> "Qwen2Shape":
        heads = cfg["num_attention_heads"]
        return cls(cfg["num_hidden_layers"], heads, cfg.get("num_key_value_heads", heads),
                   cfg.get("head_dim") or cfg["hidden_size"] // heads, bool(cfg.get("tie_word_embeddings", False)),
                   cfg.get("vocab_size"), padded_vocab_size)

    def groups(self) -> Iterator[tuple[int | None, tuple[Entry, ...]]]:
        """(layer or None, entries) in conversion order: embedding, each layer, final norm (+ output)."""
        yield None, (EMBEDDING,)
        for i in range(self.num_layers):
            yield i, LAYER
        yield None, (FINAL_NORM,) if self.tie_word_embeddings else (FINAL_NORM, OUTPUT)


def padded_vocab(vocab_size: int, tensor_parallel: int, divisible_by: int = 1) -> int:
    """Smallest multiple of divisible_by·tensor_parallel at or above vocab_size."""
    step = divisible_by * tensor_parallel
    return -(-vocab_size // step) * step


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


def combine(entry: Entry, tensors: list[Tensor], shape: Qwen2Shape) -> Tensor:
    """HF tensors (in `entry.hf` order) -> the full megatron-core tensor."""
    if entry.combine == "qkv":
        return fuse_qkv(*tensors, shape)
    out = torch.cat(tensors) if entry.combine == "cat" else tensors[0]
    if entry.tp == "vocab" and shape.padded_vocab_size and shape.padded_vocab_size > out.shape[0]:
        out = torch.cat([out, out.new_zeros(shape.padded_vocab_size - out.shape[0], *out.shape[1:])])
    return out


def separate(entry: Entry, tensor: Tensor, shape: Qwen2Shape) -> list[Tensor]:
    """Inverse of `combine` (vocabulary padding removed when `shape.vocab_size` is known)."""
    if entry.combine == "qkv":
        return list(split_qkv(tensor, shape))
    if entry.combine == "cat":
        return list(torch.chunk(tensor, 2, dim=0))
    if entry.tp == "vocab" and shape.vocab_size and tensor.shape[0] > shape.vocab_size:
        tensor = tensor[: shape.vocab_size]
    return [tensor]


def iter_hf_to_megatron(get: Callable[[str], Tensor], shape: Qwen2Shape) -> Iterator[tuple[int | None, dict[str, Tensor]]]:
    """Per group (layer or None): {megatron local-spec name: full tensor}; `get(hf_name)` is lazy."""
    for layer, group in shape.groups():
        out = {}
        for entry in group:
            name, hf_names = entry.at(layer)
            out[name] = combine(entry, [get(h) for h in hf_names], shape)
        yield layer, out


def hf_to_megatron(hf: dict[str, Tensor], shape: Qwen2Shape) -> dict[str, Tensor]:
    """HF Qwen2ForCausalLM state dict -> megatron-core GPTModel (local-spec names) state dict."""
    return {k: v for _, group in iter_hf_to_megatron(hf.__getitem__, shape) for k, v in group.items()}


def iter_megatron_to_hf(get: Callable[[str], Tensor], shape: Qwen2Shape) -> Iterator[tuple[str, Tensor]]:
    """(HF name, full tensor) pairs in conversion order; `get(local-spec name)` is called once per
    Megatron tensor, when needed, so a caller can gather or read lazily. Tied models also yield
    `lm_head.weight` (the embedding), as rollout engines expect; file writers may drop it."""
    embedding = None
    for layer, group in shape.groups():
        for entry in group:
            name, hf_names = entry.at(layer)
            parts = separate(entry, get(name), shape)
            if entry is EMBEDDING:
                embedding = parts[0]
            yield from zip(hf_names, parts)
    if shape.tie_word_embeddings:
        yield OUTPUT.hf[0], embedding


def megatron_to_hf(mg: dict[str, Tensor], shape: Qwen2Shape) -> dict[str, Tensor]:
    """Inverse of `hf_to_megatron` (accepts local-spec or TE-spec norm names)."""
    mg = {local_spec_name(k): v for k, v in mg.items() if not k.endswith("_extra_state")}
    return dict(iter_megatron_to_hf(mg.__getitem__, shape))


def local_spec_name(name: str) -> str:
    for local, te in TE_NORM_NAMES.items():
        if name.endswith(te):
            return name[: -len(te)] + local
    return name


def te_spec_name(name: str) -> str:
    for local, te in TE_NORM_NAMES.items():
        if name.endswith(local):
            return name[: -len(local)] + te
    return name


_ENTRY_BY_SUFFIX = {e.megatron.rsplit("}.", 1)[-1]: e for e in (EMBEDDING, *LAYER, FINAL_NORM, OUTPUT)}


def entry_for(name: str) -> Entry:
    """The table entry of a megatron-core tensor name (local or TE spec, with or without a layer)."""
    local = local_spec_name(name)
    for suffix, entry in _ENTRY_BY_SUFFIX.items():
        if local == suffix or local.endswith("." + suffix):
            return entry
    raise KeyError(f"{name!r} is not a Qwen2 megatron-core tensor")


def shard_for_tp(name: str, full: Tensor, rank: int, size: int, shape: Qwen2Shape) -> Tensor:
    """This tensor-parallel rank's shard of a full megatron-core tensor."""
    if size == 1:
        return full
    kind = entry_for(name).tp
    if kind == "qkv":
        if shape.num_kv_heads % size:
            raise ValueError(f"{shape.num_kv_heads} KV heads cannot be split over tensor_parallel={size}")
        groups = full.reshape(shape.num_kv_heads, -1, *full.shape[1:])
        return torch.chunk(groups, size, dim=0)[rank].reshape(-1, *full.shape[1:])
    if kind == "gate_up":
        gate, up = torch.chunk(full, 2, dim=0)
        return torch.cat([torch.chunk(gate, size, dim=0)[rank], torch.chunk(up, size, dim=0)[rank]])
    if kind == "cols":
        return torch.chunk(full, size, dim=1)[rank]
    if kind == "vocab":
        if full.shape[0] % size:
            raise ValueError(f"vocabulary {full.shape[0]} is not divisible by tensor_parallel={size} (pad it)")
        return torch.chunk(full, size, dim=0)[rank]
    return full


def unshard_tp(name: str, shards: list[Tensor], shape: Qwen2Shape) -> Tensor:
    """Inverse of `shard_for_tp` over all ranks' shards."""
    size = len(shards)
    if size == 1:
        return shards[0]
    kind = entry_for(name).tp
    if kind == "qkv":
        per_rank = [s.reshape(shape.num_kv_heads // size, -1, *s.shape[1:]) for s in shards]
        return torch.cat(per_rank, dim=0).reshape(-1, *shards[0].shape[1:])
    if kind == "gate_up":
        halves = [torch.chunk(s, 2, dim=0) for s in shards]
        return torch.cat([torch.cat([h[0] for h in halves]), torch.cat([h[1] for h in halves])])
    if kind == "cols":
        return torch.cat(shards, dim=1)
    if kind == "vocab":
        return torch.cat(shards, dim=0)
    return shards[0]
