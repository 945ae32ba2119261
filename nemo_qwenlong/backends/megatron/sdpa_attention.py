"""Core attention for megatron-core's local layer spec through torch's scaled_dot_product_attention.

megatron-core's local `DotProductAttention` builds the full [b·heads, s, s] score matrix, repeats
K/V for grouped queries and softmaxes in Python-visible steps; on CPU its cost grows like s² in
memory and time. `F.scaled_dot_product_attention(is_causal=True, enable_gqa=True)` dispatches to
torch's fused (flash) CPU kernel, which never holds the scores. The layout is the local spec's:
query [sq, b, heads/TP, d], key/value [sk, b, groups/TP, d] in, context [sq, b, heads/TP·d] out.

Like Transformer Engine's attention, a causal layer ignores the `attention_mask` tensor (the mask
type says it all), so callers need not build an [s, s] mask. TE stays the GPU path: packed (THD)
sequences, context parallelism and attention dropout are refused here, with that message.
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor

from megatron.core.process_groups_config import ProcessGroupCollection
from megatron.core.transformer.enums import AttnMaskType
from megatron.core.transformer.module import MegatronModule
from megatron.core.transformer.transformer_config import TransformerConfig
from megatron.core.utils import divide


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
        if packed_seq_params is not None or attention_bias is not None:
            raise ValueError("SDPA core attention takes no packed (THD) sequences or attention bias: "
                             "those need Transformer Engine attention")
        mask_type = self.attn_mask_type if attn_mask_type is None else attn_mask_type
        causal = mask_type == AttnMaskType.causal
        # mask convention: True = masked out (megatron); SDPA's boolean attn_mask is True = attend
        mask = None if causal or attention_mask is None else ~attention_mask
        q, k, v = (t.permute(1, 2, 0, 3) for t in (query, key, value))  # [b, heads, s, d]
        context = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal,
                                                 scale=self.softmax_scale,
                                                 enable_gqa=self.heads_per_partition != self.groups_per_partition)
        sq, b = query.shape[0], query.shape[1]
        return context.permute(2, 0, 1, 3).reshape(sq, b, -1)  # [sq, b, np·d]
