"""Core attention for megatron-core's local layer spec through torch's scaled_dot_product_attention.

megatron-core's local `DotProductAttention` builds the full [b·heads, s, s] score matrix, repeats
K/V for grouped queries and softmaxes in Python-visible steps; on CPU its cost grows like s² in
memory and time. `F.scaled_dot_product_attention(is_causal=True, enable_gqa=True)` dispatches to
torch's fused (flash) CPU kernel, which never holds the scores. The layout is the local spec's:
query [sq, b, heads/TP, d], key/value [sk, b, groups/TP, d] in, context [sq, b, heads/TP·d] out.

Like Transformer Engine's attention, a causal layer ignores the `attention_mask` tensor (the mask
type says it all), so callers need not build an [s, s] mask. Packed (THD) sequences
(`algorithms.packed`; megatron hands query [t, heads/TP, d] and `PackedSeqParams`) are attended
causally within each row, one batched call per distinct row length; a row's padding positions get
zeros, as nothing reads them. Shared-prompt trees (`algorithms.shared_prompt`, handed as
`SharedPromptParams`) attend each trunk causally and each branch to its trunk plus causally to
itself (one call per forked tree, its branches padded to the longest); `rope_at_positions` gives
RoPE the layout's own position ids. TE stays the GPU path:
context parallelism and attention dropout are refused here, with that message.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from megatron.core.packed_seq_params import PackedSeqParams
from megatron.core.process_groups_config import ProcessGroupCollection
from megatron.core.transformer.enums import AttnMaskType
from megatron.core.transformer.module import MegatronModule
from megatron.core.transformer.transformer_config import TransformerConfig
from megatron.core.utils import divide


@dataclass
class SharedPromptParams(PackedSeqParams):
    """megatron's THD parameters for a shared-prompt pack: one THD sequence [0, T] (so megatron's
    RoPE reads the per-position table of `rope_at_positions` whole) plus the trees' structure."""

    trees: tuple = ()

    @classmethod
    def for_layout(cls, layout, device: torch.device) -> "SharedPromptParams":  # noqa: ANN001
        cu = torch.tensor([0, layout.seq_len], dtype=torch.int32, device=device)
        return cls(qkv_format="thd", cu_seqlens_q=cu, cu_seqlens_kv=cu, cu_seqlens_q_padded=cu,
                   cu_seqlens_kv_padded=cu, max_seqlen_q=layout.seq_len, max_seqlen_kv=layout.seq_len,
                   trees=layout.trees)


@contextmanager
def rope_at_positions(model, positions: Tensor) -> Iterator[None]:  # noqa: ANN001
    """Within the block, the GPTModel's RoPE table is taken at `positions` ([T]) instead of 0..T−1;
    with one THD sequence of length T megatron applies table row t to token t (rope_utils'
    `_apply_rotary_pos_emb_thd`, its exact-offset case)."""
    rope = model.rotary_pos_emb
    table_of = type(rope).forward  # megatron's cached forward: the table for positions 0..n−1

    def forward(max_seq_len: int, offset: int = 0, packed_seq: bool = False, cp_group=None):  # noqa: ANN001, ANN202
        table = table_of(rope, int(positions.max()) + 1 if positions.numel() else 1, 0, True, None)
        if isinstance(table, tuple):  # YaRN's embedding returns (table, attention factor)
            return table[0][positions], table[1]
        return table[positions]

    rope.forward = forward
    try:
        yield
    finally:
        del rope.forward


class SDPAttention(MegatronModule):
    """Drop-in `core_attention` submodule (megatron's CoreAttentionBuilder signature)."""

    def __init__(self, config: TransformerConfig, layer_number: int, attn_mask_type: AttnMaskType,
                 attention_type: str, attention_dropout: float | None = None, softmax_scale: float | None = None,
                 cp_comm_type: str | None = None, pg_collection: ProcessGroupCollection | None = None) -> None:
        super().__init__(config=config)
        dropout = config.attention_dropout if attention_dropout is None else attention_dropout
        unsupported = {
            "context_parallel_size": (config.context_parallel_size, 1),
            "attention_dropout": (dropout, 0.0),
            "softmax_type": (config.softmax_type, "vanilla"),
            "window_size": (config.window_size, None),
        }
        wrong = [f"{k}={got!r} (needs {want!r})" for k, (got, want) in unsupported.items() if got != want]
        if wrong:
            raise ValueError(f"SDPA core attention does not support {', '.join(wrong)}; use "
                             "parallelism.transformer_impl='transformer_engine' or local_attention='dot_product'")
        if pg_collection is None:
            pg_collection = ProcessGroupCollection.use_mpu_process_groups(required_pgs=["tp"])
        tp = pg_collection.tp.size()
        self.attn_mask_type = attn_mask_type
        self.heads_per_partition = divide(config.num_attention_heads, tp)
        self.groups_per_partition = divide(config.num_query_groups, tp)
        # Net scale of DotProductAttention: its query-key layer scaling divides then multiplies back.
        self.softmax_scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(config.kv_channels)

    def forward(self, query: Tensor, key: Tensor, value: Tensor, attention_mask: Tensor | None,
                attn_mask_type: AttnMaskType | None = None, attention_bias: Tensor | None = None,
                packed_seq_params=None) -> Tensor:  # noqa: ANN001
        """query [sq, b, np, d], key/value [sk, b, ng, d] → context [sq, b, np·d]."""
        if attention_bias is not None:
            raise ValueError("SDPA core attention takes no attention bias: that needs Transformer Engine attention")
        mask_type = self.attn_mask_type if attn_mask_type is None else attn_mask_type
        causal = mask_type == AttnMaskType.causal
        if isinstance(packed_seq_params, SharedPromptParams):
            return self._shared_prompt(query, key, value, packed_seq_params.trees)
        if packed_seq_params is not None:
            if packed_seq_params.qkv_format != "thd" or not causal:
                raise ValueError(f"SDPA core attention packs only causal 'thd' sequences, got qkv_format="
                                 f"{packed_seq_params.qkv_format!r}, mask {mask_type.name}")
            return self._packed(query, key, value, packed_seq_params)
        # mask convention: True = masked out (megatron); SDPA's boolean attn_mask is True = attend
        mask = None if causal or attention_mask is None else ~attention_mask
        q, k, v = (t.permute(1, 2, 0, 3) for t in (query, key, value))  # [b, heads, s, d]
        context = self._sdpa(q, k, v, mask=mask, causal=causal)
        sq, b = query.shape[0], query.shape[1]
        return context.permute(2, 0, 1, 3).reshape(sq, b, -1)  # [sq, b, np·d]

    def _sdpa(self, q: Tensor, k: Tensor, v: Tensor, *, mask: Tensor | None = None, causal: bool = True) -> Tensor:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, scale=self.softmax_scale,
                                              enable_gqa=self.heads_per_partition != self.groups_per_partition)

    def _packed(self, query: Tensor, key: Tensor, value: Tensor, params) -> Tensor:  # noqa: ANN001
        """query [t, np, d], key/value [t, ng, d] → context [t, np·d], causal within each packed row."""
        starts = (params.cu_seqlens_q_padded if params.cu_seqlens_q_padded is not None else params.cu_seqlens_q).tolist()
        ends = params.cu_seqlens_q.tolist()
        out = query.new_zeros(query.shape)
        self._causal_segments(query, key, value, out, [(s, e - b) for s, b, e in zip(starts, ends[:-1], ends[1:])])
        return out.reshape(query.shape[0], -1)

    def _causal_segments(self, query: Tensor, key: Tensor, value: Tensor, out: Tensor,
                         segments: list[tuple[int, int]]) -> None:
        """Causal attention within each (start, length) segment of [t, heads, d] tensors, written into
        `out`; one batched SDPA call per distinct length."""
        by_length: dict[int, list[int]] = {}
        for start, n in segments:
            if n:
                by_length.setdefault(n, []).append(start)
        for n, starts in by_length.items():
            idx = (torch.tensor(starts).unsqueeze(1) + torch.arange(n)).reshape(-1).to(query.device)
            q, k, v = (x.index_select(0, idx).view(len(starts), n, *x.shape[1:]).transpose(1, 2)
                       for x in (query, key, value))
            out.index_copy_(0, idx, self._sdpa(q, k, v).transpose(1, 2).reshape(-1, *query.shape[1:]))

    def _shared_prompt(self, query: Tensor, key: Tensor, value: Tensor, trees: tuple) -> Tensor:
        """query [t, np, d], key/value [t, ng, d] → context [t, np·d]: per tree, the trunk causally,
        each branch over [trunk, itself] with the trunk fully visible and itself causal. A tree of one
        branch is a plain causal row (its positions run on from the trunk's), so those, and the
        trunks, go through `_causal_segments`; a tree's branches take one call, padded to the longest."""
        out = query.new_zeros(query.shape)
        rows = [(t.start, t.trunk + t.branches[0][1]) for t in trees if len(t.branches) == 1]
        forked = [t for t in trees if len(t.branches) > 1]
        self._causal_segments(query, key, value, out, rows + [(t.start, t.trunk) for t in forked])
        for tree in forked:
            self._branches(query, key, value, out, tree)
        return out.reshape(query.shape[0], -1)

    def _branches(self, query: Tensor, key: Tensor, value: Tensor, out: Tensor, tree) -> None:  # noqa: ANN001
        """Every branch of `tree` in one call: queries [G, L] (L = the longest branch; shorter ones padded
        with their own first position, whose outputs are dropped), keys [trunk, branch]; one [L, P−1+L]
        mask for all: the whole trunk, the branch causally. A valid query j < R never reaches a padded
        key (> j), so the padding needs no mask of its own."""
        dev, s, pt = query.device, tree.start, tree.trunk
        starts = torch.tensor([b for b, _ in tree.branches])
        lengths = torch.tensor([n for _, n in tree.branches])
        width = int(lengths.max())
        col = torch.arange(width)
        valid = col.unsqueeze(0) < lengths.unsqueeze(1)  # [G, L]
        idx = (starts.unsqueeze(1) + torch.where(valid, col, 0)).to(dev)  # [G, L]
        q, k, v = (x[idx] for x in (query, key, value))  # [G, L, heads, d]
        g = len(tree.branches)
        k, v = (torch.cat([x[s:s + pt].unsqueeze(0).expand(g, -1, -1, -1), own], dim=1) for x, own in ((key, k), (value, v)))
        own = torch.tril(torch.ones(width, width, dtype=torch.bool))
        mask = torch.cat([torch.ones(width, pt, dtype=torch.bool), own], dim=1).to(dev)  # [L, pt+L], broadcast
        ctx = self._sdpa(*(x.transpose(1, 2) for x in (q, k, v)), mask=mask, causal=False).transpose(1, 2)
        keep = valid.reshape(-1).to(dev)
        out.index_copy_(0, idx.reshape(-1)[keep], ctx.reshape(-1, *query.shape[1:])[keep])
